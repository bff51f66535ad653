"""The KWOK scenario's signal that a gated gang waits (simulations/kwok_scenario.py, gated_wait): the extender's
Events as the API server serves them, a gang still being created excepted."""

from scheduler.extender.service import GANG_INCOMPLETE
from simulations.kwok_scenario import gated_wait


def _event(reason: str, message: str, kind: str = "Pod") -> dict:
    return {"involvedObject": {"kind": kind, "name": "g-worker-0", "namespace": "scenario-clique"},
            "reason": reason, "message": message}


def test_a_gang_with_no_room_or_holding_for_one_domain_is_waiting():
    assert gated_wait(_event("GangUnschedulable", "no leaf has 4 free hosts")) == \
        ("g-worker-0", "GangUnschedulable", "no leaf has 4 free hosts")
    assert gated_wait(_event("GangWaiting", "its only places now span more than one leaf"))[1] == "GangWaiting"


def test_a_gang_still_being_created_other_reasons_and_other_objects_are_not():
    assert gated_wait(_event("GangWaiting", f"gang g {GANG_INCOMPLETE}: 2 of 4 exist")) is None
    assert gated_wait(_event("Scheduled", "bound")) is None
    assert gated_wait(_event("GangUnschedulable", "x", kind="Node")) is None
    assert gated_wait({}) is None
