"""Whatever a cluster spec or a fabric file holds (random YAML, random values at every field, random bytes, deep
nesting, aliases, odd unicode), loading it gives a spec / fabric that can be used, or the loader's documented
error (SpecError, FabricError) naming the file: never another exception. The NVLink matrix annotation parser
likewise gives a LinkMatrix or a MatrixError.

CLIQUE_FUZZ_EXAMPLES sets the examples per property (default 150; e.g. 5000 for a long run)."""

from __future__ import annotations

import copy
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topology.fabric import FabricError, load_fabric, parse_fabric
from topology.model import Topology
from topology.nvlink import LinkMatrix, MatrixError, parse_nvlink_matrix
from topology.spec import SpecError, load_cluster_spec, parse_cluster_spec

EXAMPLES = int(os.environ.get("CLIQUE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SPEC = {"name": "fz", "levels": [{"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 4},
                                 {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 2,
                                  "valueFormat": "{cluster}-{level}.{index}", "pools": ["a"]}],
        "pools": [{"name": "a", "hosts": 4, "gpus": 8, "cpu": "96", "memory": "1Ti", "labels": {"rack": "r1"}},
                  {"name": "b", "hosts": 2, "gpus": 4, "gpuProduct": "NVIDIA-GB200", "pods": 50}]}
FABRIC = {"levels": ["spine", "leaf"],
          "switches": [{"name": "sp-a", "children": [{"name": "lf-1", "hosts": ["n1", "n2"]},
                                                     {"name": "lf-2", "hosts": ["n3"]}]},
                       {"name": "sp-b", "children": [{"name": "lf-3", "hosts": ["n4"]}]}]}

ODD_TEXT = st.sampled_from(["", " ", "\x00", "\u202e", "\ud800", "😀" * 20, "{", "{index", "{0}", "{level!r}",
                            "{cluster.x}", "a" * 300, "-1", "1e999999", "NaN", ".inf", "0x10", "~", "null",
                            "yes", "2001-13-45", "9" * 5000])
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | ODD_TEXT,
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=15)


def _paths(doc, prefix=()):
    """Every path to a value in a document (dict keys and list indexes)."""
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        yield from _paths(v, (*prefix, k))


SPEC_PATHS = list(_paths(SPEC)) + [("levels", 0, "valueFormat"), ("levels", 1, "pools", 1), ("pools", 0, "labels", "k")]
FABRIC_PATHS = list(_paths(FABRIC)) + [("switches", 0, "children", 0, "children")]


def _place(doc, path, value):
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        nxt = node[k] if isinstance(node, list) and isinstance(k, int) and k < len(node) else (
            node.get(k) if isinstance(node, dict) else None)
        if not isinstance(nxt, (dict, list)):
            return doc  # the path was cut off by an earlier change: leave it
        node = nxt
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value
    return doc


def _check_spec(load):
    try:
        spec = load()
    except SpecError as err:
        assert str(err), "an empty message"
        return
    if spec.host_count <= 10_000:  # a spec that loads can be used: hosts, labels, the topology model
        hosts = spec.hosts()
        assert all(isinstance(v, str) for h in hosts for v in h.labels.values())
        Topology(hosts, [])


def _check_fabric(load):
    try:
        fabric = load()
    except FabricError as err:
        assert str(err)
        return
    assert all(isinstance(h, str) and all(isinstance(v, str) for v in labels.values())
               for h, labels in fabric.host_labels.items())


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(SPEC_PATHS), _json), min_size=1, max_size=3),
       drop=st.lists(st.sampled_from(SPEC_PATHS), max_size=2))
def test_random_values_at_cluster_spec_fields_give_a_spec_or_a_spec_error(changes, drop):
    doc = copy.deepcopy(SPEC)
    for path, value in changes:
        doc = _place(doc, path, value)
    for path in drop:
        parent = doc
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path:
            parent.pop(path[-1], None)
    _check_spec(lambda: parse_cluster_spec(doc))


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(FABRIC_PATHS), _json), min_size=1, max_size=3))
def test_random_values_at_fabric_fields_give_a_fabric_or_a_fabric_error(changes):
    doc = copy.deepcopy(FABRIC)
    for path, value in changes:
        doc = _place(doc, path, value)
    _check_fabric(lambda: parse_fabric(doc))


YAMLISH = st.text(alphabet="[]{}:,-&*!|>'\"#%@` \n\t0123456789abc.x~?/\\", max_size=120)
# documents that are valid YAML, with PyYAML's odd corners: aliases, tags, merge keys, huge or deep values
TRICKS = st.sampled_from([
    b"name: &a [1, 2]\npools: [{name: x, hosts: 1, labels: {k: *a}}]\n",
    b"levels: &l [a, b]\nswitches: [{name: *l, hosts: [h]}]\n",
    b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b]\n"
    b"name: *c\nlevels: *c\nswitches: *c\npools: [{name: *c, hosts: 1}]\n",
    b"pools: [{name: x, hosts: !!float 1e400}]\n",
    b"pools: [{name: x, hosts: " + b"9" * 5000 + b"}]\n",
    b"pools: [{<<: {name: x, hosts: 2}, gpus: 8}]\n",
    b"pools: [{name: x, hosts: 1, cpu: !!binary aGVsbG8=}]\n",
    b"pools: [{name: !!timestamp 2001-12-14, hosts: 1}]\n",
    b"!!python/object:os.system {}\n",
    b"[" * 5000 + b"]" * 5000,
    b"{a: " * 5000 + b"1" + b"}" * 5000,
    b"levels: [" + b"a, " * 10_000 + b"b]\nswitches: []\n",
    b"\xef\xbb\xbfname: bom\npools: [{name: x, hosts: 1}]\n",
    "name: x".encode("utf-16"),
    b"name: caf\xe9\n",
    b"---\nname: a\n---\nname: b\n",
])


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                         YAMLISH.map(str.encode), TRICKS,
                         st.tuples(st.sampled_from([SPEC, FABRIC]), st.sampled_from([SPEC_PATHS[3], FABRIC_PATHS[2]]),
                                   _json).map(lambda t: yaml.safe_dump(_place(copy.deepcopy(t[0]), t[1], t[2])).encode())))
def test_any_file_content_gives_a_spec_or_fabric_or_the_loaders_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fz") / "file.yaml"
    path.write_bytes(content)
    _check_spec(lambda: load_cluster_spec(path))
    _check_fabric(lambda: load_fabric(path))


@FUZZ
@given(text=st.one_of(st.text(alphabet="XNP-;; \n", max_size=80), st.text(max_size=40)))
def test_any_nvlink_annotation_gives_a_matrix_or_a_matrix_error(text):
    try:
        assert isinstance(parse_nvlink_matrix(text), LinkMatrix)
    except MatrixError as err:
        assert str(err)


@pytest.mark.parametrize("content, says", [
    (bytes(range(256)), "not UTF-8 text (byte 0x80 at offset 128)"),
    ("name: x".encode("utf-16"), "UTF-16 byte-order mark"),
    (b"[" * 5000 + b"]" * 5000, "nested more than 64 levels deep"),
    (b"pools: [\n", "is not valid YAML (line"),
    (b"name: &a [1]\npools: [{name: x, hosts: 1}]\n", "name: expected a string, got a list"),
    (b"levels: 5\npools: [{name: x, hosts: 1}]\n", "levels: expected a list of levels"),
    (b"pools: {name: x}\n", "pools: expected a list of pools"),
    (b"pools: [{name: x, hosts: 1, cpu: .nan}]\n", "pools[0]: 'nan' is not a Kubernetes quantity"),
    (b"pools: [{name: x, hosts: 1, cpu: true}]\n", "pools[0].cpu: expected a quantity"),
    (b"pools: [{name: x, hosts: 1, memory: 1e999999}]\n", "out of range"),
    (b"levels: [{name: l, label: k, hostsPerDomain: 1, valueFormat: '{rack}'}]\npools: [{name: x, hosts: 1}]\n",
     "levels[0].valueFormat: '{rack}' is not a template of {level}, {index} and {cluster}"),
    (b"pools: [{name: x, hosts: 2000000}]\n", "at most 1000000 are supported"),
    (b"pools: [{name: x, hosts: 1, labels: {rack: [1]}}]\n", "labels['rack']: expected a string, got a list"),
])
def test_each_broken_cluster_spec_file_is_a_spec_error_that_says_what_and_where(tmp_path, content, says):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as err:
        load_cluster_spec(path)
    assert str(path) in str(err.value) and says in str(err.value), str(err.value)


def test_a_directory_or_an_unreadable_path_is_a_spec_or_fabric_error(tmp_path):
    with pytest.raises(SpecError, match="cannot be read"):
        load_cluster_spec(tmp_path)
    with pytest.raises(FabricError, match="cannot be read"):
        load_fabric(tmp_path)


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d.update(levels=5), "'levels' must be a list of 1 to 16"),
    (lambda d: d.update(levels=None), "'levels' must be a list of 1 to 16"),
    (lambda d: d.update(levels=[f"l{i}" for i in range(17)]), "'levels' must be a list of 1 to 16"),
    (lambda d: d["levels"].__setitem__(0, {"a": 1}), "levels[0]: expected a name (a string), got dict"),
    (lambda d: d["switches"][0].update(name=None), "switches[0].name: expected a name"),
    (lambda d: d["switches"][0]["children"][0]["hosts"].append(["n9"]), "hosts[2]: expected a name"),
])
def test_each_broken_fabric_is_a_fabric_error_that_says_where(mutate, says):
    doc = copy.deepcopy(FABRIC)
    mutate(doc)
    with pytest.raises(FabricError) as err:
        parse_fabric(doc)
    assert says in str(err.value), str(err.value)
