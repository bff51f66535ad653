from decimal import Decimal

import pytest

from topology.quantity import QuantityError, as_int, cpu_millis, parse_quantity


@pytest.mark.parametrize("text, expected", [
    ("8", Decimal(8)), ("500m", Decimal("0.5")), ("2Gi", Decimal(2 * 2**30)), ("1Ti", Decimal(2**40)),
    ("1.5", Decimal("1.5")), ("3k", Decimal(3000)), ("1e3", Decimal(1000)), ("64M", Decimal(64 * 10**6)),
])
def test_quantities_in_node_capacity_parse_to_base_units(text, expected):
    assert parse_quantity(text) == expected


def test_cpu_is_counted_in_millicores_rounded_up():
    assert cpu_millis("192") == 192000
    assert cpu_millis("0.0005") == 1


def test_integral_quantities_round_up():
    assert as_int("1.2") == 2
    assert as_int(8) == 8


@pytest.mark.parametrize("bad", ["", "lots", "8 GPUs", "Gi"])
def test_malformed_quantity_names_the_value_and_the_fix(bad):
    with pytest.raises(QuantityError, match="quantity"):
        parse_quantity(bad)
