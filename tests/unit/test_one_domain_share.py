"""One-domain share three ways (issue #19): over the gangs a scheduler placed (the original figure), over every
multi-pod gang that arrived (`all`: one that never ran counts as not in one domain), and over the gangs every
compared scheduler placed (`common`). Pure: offline simulator and table formatting, no cluster."""

from __future__ import annotations

from scheduler.placement import CliqueEngine, Gang, Role
from scheduler.placement.snapshots import snapshot_from_spec
from simulations.kwok_scenario import KwokResult, kwok_table
from simulations.placement_sim import one_domain_share_common, simulate, table, with_common_share
from simulations.workloads import Arrival
from topology.spec import parse_cluster_spec

TWO_LEAVES = {"name": "two-leaves",
              "levels": [{"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 4},
                         {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 2}],
              "pools": [{"name": "h", "hosts": 4, "gpus": 8, "cpu": "64", "memory": "256Gi"}]}


def pair(name: str) -> Gang:
    return Gang(name, (Role("leader", 1, 8, one_per_host=True), Role("worker", 1, 8)), preferred_level="leaf")


def test_a_gang_still_waiting_at_the_end_counts_against_the_all_share_but_not_the_placed_share():
    base = snapshot_from_spec(parse_cluster_spec(TWO_LEAVES))  # 2 leaves x 2 hosts x 8 GPUs
    # a fills leaf 0, the single pod takes one host of leaf 1, then b (two hosts) cannot be placed at all
    arrivals = [Arrival(0.0, pair("a"), None), Arrival(1.0, Gang("one", (Role("pod", 1, 8),)), None),
                Arrival(2.0, Gang("big", (Role("worker", 3, 8),), preferred_level="leaf"), None)]
    res = simulate(CliqueEngine(), base, arrivals, timed=True)
    s = res.summary()
    assert s["placed"] == 2 and s["failed"] == 1 and s["multi_gangs"] == 2
    assert s["gang_domains"] == {"a": {"spine": 1, "leaf": 1}}
    assert s["one_domain_share"] == {"spine": 1.0, "leaf": 1.0}  # over the one multi-pod gang placed
    assert s["one_domain_share_all"] == {"spine": 0.5, "leaf": 0.5}  # big never ran: not in one domain


def test_a_split_gang_counts_once_per_level_it_spans():
    base = snapshot_from_spec(parse_cluster_spec(TWO_LEAVES))
    # three hosts in one gang: one leaf has two, so the gang spans both leaves of the one spine
    s = simulate(CliqueEngine(), base, [Arrival(0.0, Gang("tp24", (Role("worker", 3, 8),), preferred_level="leaf"),
                                                None)], timed=True).summary()
    assert s["gang_domains"] == {"tp24": {"spine": 1, "leaf": 2}}
    assert s["one_domain_share"] == s["one_domain_share_all"] == {"spine": 1.0, "leaf": 0.0}


def test_the_common_share_counts_only_the_gangs_every_scheduler_placed():
    ours = {"policy": "ours", "gang_domains": {"g1": {"leaf": 1}, "g2": {"leaf": 2}, "g3": {"leaf": 1}}}
    theirs = {"policy": "theirs", "gang_domains": {"g1": {"leaf": 1}, "g3": {"leaf": 2}}}  # never placed g2
    assert one_domain_share_common([ours, theirs]) == {"leaf": 1.0}  # g2, the one ours split, is left out
    assert one_domain_share_common([theirs, ours]) == {"leaf": 0.5}
    both = with_common_share([ours, theirs])
    assert [b["one_domain_share_common"] for b in both] == [{"leaf": 1.0}, {"leaf": 0.5}]
    assert [b["common_gangs"] for b in both] == [2, 2] and both[0]["gang_domains"] == ours["gang_domains"]
    assert one_domain_share_common([ours, {"policy": "none", "gang_domains": {}}]) == {}


def test_the_tables_show_the_placed_all_and_common_shares_side_by_side():
    base = snapshot_from_spec(parse_cluster_spec(TWO_LEAVES))
    arrivals = [Arrival(0.0, pair("a"), None), Arrival(1.0, Gang("one", (Role("pod", 1, 8),)), None),
                Arrival(2.0, Gang("big", (Role("worker", 3, 8),), preferred_level="leaf"), None)]
    text = table([simulate(CliqueEngine(), base, arrivals, timed=True)], timed=True)
    head, row = text.splitlines()
    words = head.split()
    assert words[words.index("1-leaf"):][:3] == ["1-leaf", "all", "common"], head
    assert row.split()[7:10] == ["100%", "50%", "100%"], row

    real = [KwokResult("clique", 3, placed=2, one_domain_share={"leaf": 1.0}, one_domain_share_all={"leaf": 0.5},
                       gang_domains={"a": {"leaf": 1}}, multi_gangs=2),
            KwokResult("kueue-tas", 3, placed=2, one_domain_share={"leaf": 0.5}, one_domain_share_all={"leaf": 0.5},
                       gang_domains={"a": {"leaf": 2}, "big": {"leaf": 1}}, multi_gangs=2)]
    lines = kwok_table(real, {}, timed=True).splitlines()
    assert "all" in lines[0] and "common" in lines[0]
    cells = {ln.split()[2]: ln.split() for ln in lines[1:]}
    # placed-only, all, and over the one gang both placed ("a": inside one leaf for clique, split for kueue)
    assert cells["clique"][9:12] == ["100%", "50%", "100%"], lines
    assert cells["kueue-tas"][9:12] == ["50%", "50%", "0%"], lines


def test_a_split_gang_is_checked_against_the_free_hosts_the_watch_saw_when_its_first_pod_was_bound():
    from simulations.kwok_scenario import PodPlan, PodSeen, split_gang_diagnostics

    labels = {f"n{i}": {"clique.dev/leaf": f"leaf-{i // 2}", "clique.dev/spine": "spine-0"} for i in range(4)}
    capacity = {n: 8 for n in labels}
    levels = [("spine", "clique.dev/spine"), ("leaf", "clique.dev/leaf")]
    gang = [PodPlan(f"g-{i}", 0, "g", 8, {}) for i in range(2)]
    pods = {"other": PodSeen(8, "n0", bound_at=1.0),  # holds n0 while g binds
            "gone": PodSeen(8, "n2", bound_at=1.0, deleted=True, deleted_at=2.0),  # left before g came
            "late": PodSeen(8, "n3", bound_at=9.0),  # bound after g: does not count
            "g-0": PodSeen(8, "n1", bound_at=5.0), "g-1": PodSeen(8, "n2", bound_at=5.1)}
    # free then: n1, n2, n3 (g's own pods do not count against it): leaf-1 had both hosts, so it could have fit
    assert split_gang_diagnostics(gang, pods, capacity, labels, levels) == {"spine": True, "leaf": True}
    pods["late"] = PodSeen(8, "n3", bound_at=3.0)  # now n3 was taken first: no leaf had two free hosts
    assert split_gang_diagnostics(gang, pods, capacity, labels, levels) == {"spine": True, "leaf": False}
