"""The admission webhook (scheduler/extender/admission.py) without an API server: the decision for each gang
source Clique recognises, the AdmissionReview it answers, malformed and random bodies over HTTP in-process
(never a 5xx, never an exception in the log), and TLS serving with a renewed certificate picked up.
Side effects: local sockets, certificates in tmp_path."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import logging
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LONG_EXAMPLES = int(os.environ.get("CLIQUE_FUZZ_EXAMPLES", "0"))  # the long fuzz run (readme-fuzz)

from clique.cli import main
from scheduler.extender.admission import (MAX_BODY, NotAReview, WebhookServer, parse_review, patch_for, review,
                                          webhook_app)
from simulations.controlplane.pki import create_serving_certs
from simulations.controlplane.processes import free_port

OURS = "clique-scheduler"


# ------------------------------------------------------------------------------------------------ builders
def mint_certs(directory: Path, host: str = "127.0.0.1") -> Path:
    """A throw-away CA and a serving certificate for `host`: directory/tls.crt, tls.key, ca.crt (returned)."""
    create_serving_certs(directory, host, common_name="clique-scheduler-webhook", days=1)
    return directory / "ca.crt"


def pod(labels: dict | None = None, annotations: dict | None = None, scheduler: str | None = "default-scheduler",
        **spec) -> dict:
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"generateName": "w-", "namespace": "team", "labels": labels or {}, "annotations": annotations or {}},
         "spec": {"containers": [{"name": "w", "image": "x"}], **spec}}
    if scheduler is not None:
        p["spec"]["schedulerName"] = scheduler
    return p


def admission_review(obj, operation: str = "CREATE", uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                        "namespace": "team", "operation": operation, "userInfo": {"username": "grove-operator"},
                        "object": obj, "oldObject": None, "dryRun": False}}


def apply_patch(obj: dict, response: dict) -> dict:
    """The object after the response's JSONPatch (only the `add` operations this webhook emits)."""
    out = copy.deepcopy(obj)
    if "patch" not in response:
        return out
    assert response["patchType"] == "JSONPatch"
    for op in json.loads(base64.b64decode(response["patch"])):
        assert op["op"] == "add"
        *parents, last = op["path"].lstrip("/").split("/")
        target = out
        for p in parents:
            target = target[p]
        target[last] = op["value"]
    return out


# ------------------------------------------------------------------------------------------------ decision
GANGS = {
    "grove podgang label": pod({"grove.io/podgang": "dgd-0"}),
    "grove pod that kai-scheduler was to place": pod({"grove.io/podgang": "dgd-0", "kai.scheduler/queue": "dynamo"},
                                                     scheduler="kai-scheduler"),
    "grove pod without a schedulerName": pod({"grove.io/podgang": "dgd-0"}, scheduler=None),
    "LeaderWorkerSet labels": pod({"leaderworkerset.sigs.k8s.io/name": "llama", "leaderworkerset.sigs.k8s.io/group-index": "0",
                                   "leaderworkerset.sigs.k8s.io/worker-index": "1"},
                                  {"leaderworkerset.sigs.k8s.io/size": "4"}),
    "LeaderWorkerSet leader before LWS's webhook labelled its group": pod({"leaderworkerset.sigs.k8s.io/name": "llama"}),
    "LWS pod that volcano was to place (Dynamo's LWS path)": pod({"leaderworkerset.sigs.k8s.io/name": "x"},
                                                                  annotations={"scheduling.k8s.io/group-name": "x-0"},
                                                                  scheduler="volcano"),
    "volcano annotation alone": pod(annotations={"scheduling.k8s.io/group-name": "pg"}, scheduler="volcano"),
    "coscheduling label": pod({"scheduling.x-k8s.io/pod-group": "pg"}),
    "Workload API schedulingGroup": pod(schedulingGroup={"podGroupName": "decode"}),
    "clique gang annotation": pod(annotations={"clique.dev/gang": "g", "clique.dev/gang-size": "4"}),
    "StatefulSet with a gang size": {**pod(annotations={"clique.dev/gang-size": "2"}),
                                     "metadata": {"name": "trt-3", "annotations": {"clique.dev/gang-size": "2"},
                                                  "ownerReferences": [{"kind": "StatefulSet", "name": "trt",
                                                                       "apiVersion": "apps/v1", "uid": "u"}]}},
    "Dynamo graph labels": pod({"nvidia.com/dynamo-graph-deployment-name": "llama",
                                "nvidia.com/dynamo-component": "VllmDecodeWorker"}),
}
UNTOUCHED = {
    "plain pod": pod({"app": "web"}),
    "plain pod, no labels at all": {"metadata": {"name": "p"}, "spec": {"containers": []}},
    "gang pod already ours": pod({"grove.io/podgang": "dgd-0"}, scheduler=OURS),
    "Dynamo component label only (older operators)": pod({"nvidia.com/dynamo-component": "Frontend"}),
    "a gang of one": pod(annotations={"clique.dev/gang": "g", "clique.dev/gang-size": "1"}),
    "created bound (nodeName set)": pod({"grove.io/podgang": "dgd-0"}, nodeName="n1"),
}


@pytest.mark.parametrize("name", GANGS)
def test_each_gang_source_is_routed_to_clique_scheduler(name):
    obj = GANGS[name]
    answer, decision = review(admission_review(obj), OURS)
    resp = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert resp["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002" and resp["allowed"] is True
    assert decision.outcome == "routed" and "warnings" not in resp
    assert apply_patch(obj, resp)["spec"]["schedulerName"] == OURS
    patched = apply_patch(obj, resp)
    patched["spec"].pop("schedulerName")
    original = copy.deepcopy(obj)
    original["spec"].pop("schedulerName", None)
    assert patched == original, "the patch touches only spec.schedulerName"


@pytest.mark.parametrize("name", UNTOUCHED)
def test_pods_that_are_not_gangs_or_already_ours_are_allowed_without_a_patch(name):
    answer, decision = review(admission_review(UNTOUCHED[name]), OURS)
    assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}, decision


def test_the_configured_scheduler_name_is_the_one_patched_in():
    obj = pod({"grove.io/podgang": "g"})
    answer, _ = review(admission_review(obj), "clique-b")
    assert apply_patch(obj, answer["response"])["spec"]["schedulerName"] == "clique-b"
    assert patch_for(obj, "clique-b") == [{"op": "add", "path": "/spec/schedulerName", "value": "clique-b"}]
    assert patch_for(pod(scheduler="clique-b"), "clique-b") == []


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_other_operations_are_allowed_untouched_and_silently(operation):
    answer, decision = review(admission_review(pod({"grove.io/podgang": "g"}), operation), OURS)
    assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}
    assert decision.outcome == "not-a-pod-create"


ODD = {
    "object missing": None,
    "object a list": [1],
    "metadata a string": {"metadata": "x", "spec": {}},
    "labels a list": {"metadata": {"labels": ["grove.io/podgang"]}, "spec": {}},
    "label value a number": {"metadata": {"labels": {"grove.io/podgang": 1}}, "spec": {}},
    "annotations a string": {"metadata": {"annotations": "a=b"}, "spec": {}},
    "ownerReferences without a name": {"metadata": {"annotations": {"clique.dev/gang-size": "2"},
                                                    "ownerReferences": [{"kind": "StatefulSet"}]}, "spec": {}},
    "spec missing": {"metadata": {"labels": {"grove.io/podgang": "g"}}},
    "spec a list": {"metadata": {}, "spec": []},
    "schedulerName a number": {"metadata": {"labels": {"grove.io/podgang": "g"}}, "spec": {"schedulerName": 3}},
    "schedulingGroup a string": {"metadata": {}, "spec": {"schedulingGroup": "g"}},
    "name too long": {"metadata": {"name": "a" * 254}, "spec": {}},
}


@pytest.mark.parametrize("name", ODD)
def test_an_odd_object_is_allowed_unpatched_with_a_warning_naming_why(name):
    answer, decision = review(admission_review(ODD[name]), OURS)
    resp = answer["response"]
    assert resp["allowed"] is True and "patch" not in resp and decision.outcome == "malformed"
    (warning,) = resp["warnings"]
    assert warning.startswith("clique-scheduler webhook: request.object") and len(warning) < 256


def test_a_review_of_another_resource_is_allowed_with_a_warning():
    body = admission_review(pod({"grove.io/podgang": "g"}))
    body["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    resp = review(body, OURS)[0]["response"]
    assert resp["allowed"] is True and "patch" not in resp and "expected a pod CREATE" in resp["warnings"][0]
    body = admission_review(pod({"grove.io/podgang": "g"}))
    body["request"]["subResource"] = "ephemeralcontainers"
    assert "patch" not in review(body, OURS)[0]["response"]


@pytest.mark.parametrize("body,says", [
    ([], "expected an AdmissionReview object"),
    ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "u"}}, "apiVersion"),
    ({"kind": "Pod", "apiVersion": "admission.k8s.io/v1"}, "kind AdmissionReview"),
    ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}, "request: expected an object"),
    ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 5}}, "uid"),
    ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": ""}}, "uid"),
    ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": "u" * 300}}, "uid"),
])
def test_bodies_that_are_not_an_admission_review_are_refused_with_a_reason(body, says):
    with pytest.raises(NotAReview, match=says):
        parse_review(body)


# ------------------------------------------------------------------------------------------------ HTTP
class _Client:
    def __init__(self) -> None:
        self.client = TestClient(TestServer(webhook_app(OURS)))

    async def __aenter__(self) -> TestClient:
        await self.client.start_server()
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.close()


async def test_the_endpoint_answers_a_review_and_refuses_what_is_not_one(caplog):
    caplog.set_level(logging.INFO)
    async with _Client() as client:
        obj = GANGS["grove podgang label"]
        resp = await client.post("/mutate", json=admission_review(obj))
        assert resp.status == 200
        answer = await resp.json()
        assert apply_patch(obj, answer["response"])["spec"]["schedulerName"] == OURS
        for body, status, says in [(b"not json", 400, "not JSON"), (b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
                                   (b"{}", 400, "AdmissionReview"), (b"\xff\xfe\x00", 400, "not JSON"),
                                   (b"1" * 5000, 400, "not JSON"), (b" " * (MAX_BODY + 1), 413, "larger than")]:
            resp = await client.post("/mutate", data=body, headers={"Content-Type": "application/json; charset=nope"})
            assert resp.status == status, (body[:20], await resp.text())
            assert says in (await resp.json())["Error"]
        assert (await client.get("/mutate")).status == 405
    assert "routing pod team/(generated name) to clique-scheduler" in caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)
_FIELDS = [[], ["metadata"], ["metadata", "name"], ["metadata", "namespace"], ["metadata", "labels"],
           ["metadata", "annotations"], ["metadata", "ownerReferences"], ["spec"], ["spec", "schedulerName"],
           ["spec", "schedulingGroup"], ["spec", "nodeName"], ["metadata", "labels", "grove.io/podgang"],
           ["metadata", "annotations", "clique.dev/gang-size"], ["metadata", "labels", "leaderworkerset.sigs.k8s.io/name"]]
_REQUEST_FIELDS = ["uid", "kind", "resource", "subResource", "operation", "object", "namespace", "name"]


@st.composite
def _bodies(draw) -> bytes:
    what = draw(st.sampled_from(["garbage", "bytes", "review-field", "pod-field"]))
    if what == "garbage":
        return json.dumps(draw(_json)).encode()
    if what == "bytes":
        return draw(st.binary(max_size=64))
    base = draw(st.sampled_from(list(GANGS.values()) + list(UNTOUCHED.values())))
    body = admission_review(copy.deepcopy(base))
    if what == "review-field":
        where = draw(st.sampled_from([body, body["request"]]))
        key = draw(st.sampled_from(["apiVersion", "kind", "request"] if where is body else _REQUEST_FIELDS))
        if draw(st.booleans()):
            where.pop(key, None)
        else:
            where[key] = draw(_json)
        return json.dumps(body).encode()
    path = draw(st.sampled_from(_FIELDS))
    obj = body["request"]
    keys = ["object", *path]
    for k in keys[:-1]:
        obj = obj.setdefault(k, {}) if isinstance(obj.get(k, {}), dict) else {}
    obj[keys[-1]] = draw(st.one_of(_json, st.text(max_size=300)))
    return json.dumps(body).encode()


@settings(max_examples=max(300, LONG_EXAMPLES), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(_bodies(), min_size=1, max_size=5))
async def test_random_and_malformed_bodies_never_get_a_5xx_nor_block_a_pod(bodies, caplog):
    caplog.set_level(logging.WARNING)
    async with _Client() as client:
        for body in bodies:
            resp = await client.post("/mutate", data=body, headers={"Content-Type": "application/json"})
            assert resp.status < 500, (body, await resp.text())
            answer = await resp.json()
            if resp.status == 200:
                sent = json.loads(body)["request"]
                assert answer["response"]["allowed"] is True and answer["response"]["uid"] == sent["uid"]
                if "patch" in answer["response"]:  # only a well-formed gang pod is ever patched
                    assert apply_patch(sent["object"], answer["response"])["spec"]["schedulerName"] == OURS
            else:
                assert resp.status == 400 and answer["Error"], answer
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], "an exception reached the log"
    assert "could not read" not in caplog.text, "pod_problem let through a shape gang_source cannot read"


# ------------------------------------------------------------------------------------------------ TLS
async def _post_tls(port: int, ca: Path, body: dict) -> dict:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession() as s:
        async with s.post(f"https://127.0.0.1:{port}/mutate", json=body, ssl=ctx) as resp:
            assert resp.status == 200
            return await resp.json()


async def test_served_over_tls_once_the_certificate_is_there_and_a_renewed_one_is_picked_up(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cert_dir = tmp_path / "tls"
    port = free_port()
    server = WebhookServer(webhook_app(OURS), "127.0.0.1", port, cert_dir, reload_s=0.05)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.sleep(0.3)  # no Secret yet: waits, says so once, does not listen
        assert not server.serving.is_set()
        assert caplog.text.count("waiting for") == 1
        first_ca = mint_certs(tmp_path / "first")
        cert_dir.mkdir()
        for f in ("tls.crt", "tls.key"):
            (cert_dir / f).write_bytes((tmp_path / "first" / f).read_bytes())
        await asyncio.wait_for(server.serving.wait(), 10)
        obj = GANGS["grove podgang label"]
        answer = await _post_tls(port, first_ca, admission_review(obj))
        assert apply_patch(obj, answer["response"])["spec"]["schedulerName"] == OURS

        # cert-manager renews: the Secret's files change under the running server (new CA here, to tell them apart)
        second_ca = mint_certs(tmp_path / "second")
        for f in ("tls.crt", "tls.key"):
            (cert_dir / f).write_bytes((tmp_path / "second" / f).read_bytes())
        for _ in range(100):
            if "renewed certificate" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert "renewed certificate" in caplog.text
        assert (await _post_tls(port, second_ca, admission_review(obj)))["response"]["allowed"] is True
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _post_tls(port, first_ca, admission_review(obj))

        (cert_dir / "tls.key").write_text("garbage")  # a broken renewal keeps the certificate it has
        await asyncio.sleep(0.3)
        assert "cannot load the certificate" in caplog.text
        assert (await _post_tls(port, second_ca, admission_review(obj)))["response"]["allowed"] is True
    finally:
        task.cancel()
        await server.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_the_webhook_flags_go_together(capsys):
    assert main(["scheduler", "extender", "--webhook-listen", "0.0.0.0:9443"]) == 2
    assert "--webhook-listen and --webhook-cert-dir go together" in capsys.readouterr().err
    assert main(["scheduler", "extender", "--webhook-cert-dir", "/tmp/x"]) == 2
    assert main(["scheduler", "extender", "--webhook-listen", "0.0.0.0:port", "--webhook-cert-dir", "/tmp/x"]) == 2
