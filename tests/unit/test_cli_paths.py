"""Regression tests of the CLIs' handling of paths and of the cluster configuration (issue #13): trace paths
with folders name their outputs by file stem, `clique simulate --nodes`, the daemons' kubectl-like kubeconfig
lookup with one clear line when there is none, and what `clique agent` says without a node name.
Pure: small slices of the bundled traces in tmp_path; no cluster (a kubeconfig is loaded, never contacted)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from clique.cli import build_parser, main
from clique.kubeclient import KubeConfigError, api_client
from simulations.simulate_cli import simulation_inputs
from simulations.workloads import data_file

NODE_COLUMNS = "sn,cpu_milli,memory_mib,gpu,model"


def head(name: str, dest: Path, lines: int) -> Path:
    """The first `lines` lines (header included) of a bundled trace, as `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(data_file(name), newline="") as fh:
        dest.write_text("".join(next(fh) for _ in range(lines)))
    return dest


def eight_gpu_nodes(dest: Path, count: int) -> Path:
    """`count` 8-GPU nodes of the openb node list (openb format)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in data_file("openb-nodes").read_text().splitlines()[1:] if r.split(",")[3] == "8"][:count]
    assert len(rows) == count
    dest.write_text("\n".join([NODE_COLUMNS, *rows]) + "\n")
    return dest


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_simulate_names_its_outputs_by_the_stem_of_a_workload_path_with_folders(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    head("openb-multigpu50", tmp_path / "traces" / "openb_pod_list_multigpu50.csv", 81)
    nodes = eight_gpu_nodes(tmp_path / "racks" / "my_nodes.csv", 16)
    monkeypatch.chdir(work)
    rc = main(["simulate", "--workload", "../traces/openb_pod_list_multigpu50.csv", "--nodes", "../racks/my_nodes.csv",
               "--policies", "clique", "--output", "out", "--json"])
    assert rc == 0
    out = last_json(capsys.readouterr().out)
    stem = "placement-openb_pod_list_multigpu50"
    for name in (f"{stem}-allocation.png", f"{stem}-unallocated.png", f"{stem}.json"):
        assert (work / "out" / name).stat().st_size > 0, name
    assert sorted(p.name for p in (work / "out").iterdir()) == sorted(
        [f"{stem}-allocation.png", f"{stem}-unallocated.png", f"{stem}.json"])
    assert out["hosts"] == 16 and out["gpus"] == 128 and out["nodes"] == "../racks/my_nodes.csv"
    assert out["workload"] == "../traces/openb_pod_list_multigpu50.csv"
    assert out["attribution"].startswith("Alibaba") and "whole GPU" in out["notes"]  # the pods are openb's
    assert json.loads((work / "out" / f"{stem}.json").read_text())["results"][0]["gangs"] == 80
    assert nodes.exists()


def test_simulate_nodes_takes_another_openb_node_list_under_the_same_overlay(tmp_path):
    nodes = eight_gpu_nodes(tmp_path / "racks" / "sixteen.csv", 16)
    args = build_parser().parse_args(["simulate", "--nodes", str(nodes), "--workload", "dynamo", "--limit", "5",
                                      "--hosts-per-nvlink", "2", "--hosts-per-leaf", "4", "--leaves-per-spine", "2"])
    base, arrivals, timed = simulation_inputs(args)
    assert len(base.hosts) == 16 and sum(h.gpus for h in base.hosts.values()) == 128 and timed and arrivals
    assert [lv.name for lv in base.topology.levels] == ["spine", "leaf", "nvlink"]
    for lv, per_domain in enumerate((8, 4, 2)):  # hosts per spine block, leaf, NVLink domain
        sizes = Counter(keys[lv] for keys in base.topology.host_keys.values())
        assert set(sizes.values()) == {per_domain}, (lv, sizes)


def test_simulate_nodes_errors_are_one_line_and_exit_2(tmp_path, capsys):
    pods = head("openb-multigpu50", tmp_path / "pods.csv", 11)
    spec = Path(__file__).parents[2] / "simulations" / "demo-offline-cluster.yaml"
    assert main(["simulate", "--nodes", str(pods), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an openb-format node list" in err and "missing columns" in err
    assert main(["simulate", "--cluster", str(spec), "--nodes", str(pods), "--output", str(tmp_path / "o")]) == 2
    assert "--nodes is an openb-format node list for --cluster openb" in capsys.readouterr().err
    assert main(["simulate", "--nodes", str(tmp_path / "nowhere.csv"), "--output", str(tmp_path / "o")]) == 2
    assert "nowhere.csv not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_replay_takes_a_trace_path_with_folders_and_keeps_the_attribution(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    head("azure-code", tmp_path / "t" / "AzureLLMInferenceTrace_code.csv", 201)
    monkeypatch.chdir(work)
    rc = main(["replay", "--trace", "../t/AzureLLMInferenceTrace_code.csv", "--output", "out", "--json"])
    assert rc == 0
    out = last_json(capsys.readouterr().out)
    assert out["requests"] == 200 and out["attribution"].startswith("Azure LLM inference trace 2023")
    for name in ("replay.png", "replay-frontier.png", "replay.json"):
        assert (work / "out" / name).stat().st_size > 0, name


# --- the daemons' cluster configuration ----------------------------------------------------------------------

def kubeconfig(path: Path, server: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: not-a-real-token}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path


@pytest.fixture
def no_cluster(tmp_path, monkeypatch) -> Path:
    """An empty HOME, no $KUBECONFIG, not in a pod. Returns HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    return home


async def host_of(kubeconfig_arg: str | None) -> str:
    api = await api_client(kubeconfig_arg)
    try:
        return api.configuration.host
    finally:
        await api.close()


async def test_kubeconfig_is_found_like_kubectl_finds_it(no_cluster, tmp_path, monkeypatch):
    with pytest.raises(KubeConfigError) as err:
        await api_client(None)
    msg = str(err.value)
    assert "\n" not in msg and "--kubeconfig" in msg and "$KUBECONFIG" in msg and "not in a pod" in msg
    kubeconfig(no_cluster / ".kube" / "config", "https://home.example:6443")
    assert await host_of(None) == "https://home.example:6443"
    env = kubeconfig(tmp_path / "env.yaml", "https://env.example:6443")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing.yaml'}:{env}")  # missing files are skipped
    assert await host_of(None) == "https://env.example:6443"
    flag = kubeconfig(tmp_path / "flag.yaml", "https://flag.example:6443")
    assert await host_of(str(flag)) == "https://flag.example:6443"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing.yaml"))  # listed but absent: not ~/.kube/config
    with pytest.raises(KubeConfigError, match=r"none of \$KUBECONFIG"):
        await api_client(None)


async def test_the_proxy_is_read_from_the_environment_once_not_on_every_request(no_cluster, tmp_path, monkeypatch):
    """aiohttp's trust_env looks up .netrc and the proxy in a worker thread per request; the client resolves
    the API server's proxy once (HTTPS_PROXY, NO_PROXY as aiohttp reads them) and turns the lookups off."""
    cfg = kubeconfig(tmp_path / "k.yaml", "https://api.example:6443")
    for var in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    async def rest():
        api = await api_client(str(cfg))
        try:
            r = api.rest_client
            return r.proxy, dict(r.proxy_headers or {}), r.pool_manager.trust_env
        finally:
            await api.close()

    assert await rest() == (None, {}, False)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    proxy, headers, trust = await rest()
    assert proxy == "http://proxy.example:3128" and headers["Proxy-Authorization"].startswith("Basic ") and not trust
    monkeypatch.setenv("NO_PROXY", "api.example")
    assert await rest() == (None, {}, False)


async def test_a_bad_kubeconfig_is_one_line_naming_the_file(no_cluster, tmp_path):
    with pytest.raises(KubeConfigError, match="--kubeconfig .*nowhere.yaml: no such file"):
        await api_client(str(tmp_path / "nowhere.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    with pytest.raises(KubeConfigError) as err:
        await api_client(str(bad))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("argv, prefix", [
    (["scheduler", "extender", "--listen", "127.0.0.1:0"], "clique scheduler extender: "),
    (["autoscaler", "run", "--prometheus-url", "http://127.0.0.1:9", "--listen", "127.0.0.1:0"],
     "clique autoscaler run: "),
])
def test_daemons_without_a_cluster_say_what_to_pass_in_one_line(no_cluster, capsys, argv, prefix):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(prefix + "no cluster configuration"), err
    assert "pass --kubeconfig PATH or set $KUBECONFIG" in err[0] and "Traceback" not in err[0]


def test_agent_with_a_node_but_no_cluster_says_so_in_one_line(no_cluster, capsys):
    from topology.agent.fake_nvml import fake_profile
    from topology.agent.main import run_agent

    rc = asyncio.run(run_agent(fake_profile("nvswitch-8"), "node-a", None, "127.0.0.1", 0, 1.0, False))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("clique agent: no cluster configuration"), err


def test_agent_without_a_node_name_says_it_patches_no_node(no_cluster, caplog):
    from simulations.controlplane.processes import free_port
    from topology.agent.fake_nvml import fake_profile
    from topology.agent.main import run_agent

    async def scenario() -> None:
        task = asyncio.create_task(run_agent(fake_profile("nvswitch-8"), None, None, "127.0.0.1", free_port(),
                                             0.2, False))
        try:
            for _ in range(100):
                if any("not patching any Node" in r.getMessage() for r in caplog.records):
                    return
                assert not task.done(), task.result()
                await asyncio.sleep(0.05)
            raise AssertionError("the agent never said whether it patches a Node")
        finally:
            task.cancel()
            with pytest.raises((asyncio.CancelledError, Exception)):
                await task

    with caplog.at_level(logging.INFO, logger="clique.agent"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "not patching any Node" in r.getMessage()]
    assert said and "no --node-name / $NODE_NAME given: serving metrics only" in said[0]
    assert "for node None" not in caplog.text
