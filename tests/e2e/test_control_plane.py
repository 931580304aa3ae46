"""The control plane on a real kube-apiserver: kubectl and the LiveKit API meet at the CR."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api

from local_stack.node.kube import Kube
from tests.e2e.conftest import GoRun, Kubectl, NodeRun, eventually, lki

pytestmark = pytest.mark.e2e

ID_LABEL = "ingress.lkop.dev/id"


async def list_by_id(lkapi: api.LiveKitAPI, ingress_id: str) -> api.IngressInfo:
    res = await lkapi.ingress.list_ingress(api.ListIngressRequest(ingress_id=ingress_id))
    assert len(res.items) == 1
    return res.items[0]


async def secret_names(kube: Kube, namespace: str) -> set[str]:
    listing = await kube.get(f"/api/v1/namespaces/{namespace}/secrets")
    return {s["metadata"]["name"] for s in listing["items"]}


async def reconciled_id(kubectl: Kubectl, name: str) -> str:
    """The ingress id the operator gives a CR applied with kubectl."""

    async def has_id() -> str:
        ingress_id = kubectl.get("lki", name).get("status", {}).get("ingressId")
        assert ingress_id
        return str(ingress_id)

    return await eventually(has_id)


async def test_kubectl_apply_is_listed_by_the_shim_and_delete_removes_it_and_its_secret(
    kubectl: Kubectl, lkapi: api.LiveKitAPI, kube: Kube
) -> None:
    kubectl.apply(lki("kubectl-cam", inputType="RTMP", roomName="kubectl-room", participantIdentity="cam"))

    ingress_id = await reconciled_id(kubectl, "kubectl-cam")
    res = await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name="kubectl-room"))
    assert [i.ingress_id for i in res.items] == [ingress_id]
    info = res.items[0]
    assert len(info.stream_key) == 12 and info.url.startswith("rtmp://") and info.reusable
    assert info.state.status == api.IngressState.ENDPOINT_INACTIVE
    secret = kubectl.get("secret", "kubectl-cam-stream-key")
    assert base64.b64decode(secret["data"]["streamKey"]).decode() == info.stream_key
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "LiveKitIngress"

    kubectl.run("delete", "lki", "kubectl-cam", "--wait=true", "--timeout=30s")

    async def gone() -> None:
        res = await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name="kubectl-room"))
        assert res.items == []
        assert "kubectl-cam-stream-key" not in await secret_names(kube, kubectl.namespace)

    await eventually(gone)


async def test_stream_key_secret_ref_yields_that_exact_key(
    kubectl: Kubectl, lkapi: api.LiveKitAPI, kube: Kube
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pinned-key"},
            "stringData": {"key": "MyPinnedKey1"},
        }
    )
    kubectl.apply(
        lki(
            "pinned",
            inputType="WHIP",
            roomName="pinned-room",
            participantIdentity="whip",
            streamKeySecretRef={"name": "pinned-key", "key": "key"},
        )
    )

    async def listed() -> api.IngressInfo:
        res = await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name="pinned-room"))
        assert len(res.items) == 1 and res.items[0].stream_key
        return res.items[0]

    info = await eventually(listed)
    assert info.stream_key == "MyPinnedKey1"
    assert kubectl.get("lki", "pinned")["status"]["streamKeySecret"] == "pinned-key"

    # Rotating the key in the user's Secret shows at once.
    rotated = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pinned-key"}}
    kubectl.apply({**rotated, "stringData": {"key": "RotatedKey12"}})

    async def rotated_key() -> None:
        assert (await listed()).stream_key == "RotatedKey12"

    await eventually(rotated_key)
    kubectl.run("delete", "lki", "pinned", "--wait=true", "--timeout=30s")
    # The user's Secret is theirs: deleting the ingress leaves it.
    assert "pinned-key" in await secret_names(kube, kubectl.namespace)
    kubectl.run("delete", "secret", "pinned-key")


async def test_missing_stream_key_secret_shows_in_the_ready_condition(kubectl: Kubectl) -> None:
    kubectl.apply(
        lki("dangling", inputType="RTMP", participantIdentity="x", streamKeySecretRef={"name": "nope"})
    )

    async def not_ready() -> dict[str, Any]:
        conditions = kubectl.get("lki", "dangling").get("status", {}).get("conditions", [])
        ready = next(c for c in conditions if c["type"] == "Ready")
        assert ready["status"] == "False"
        return dict(ready)

    ready = await eventually(not_ready)
    assert ready["reason"] == "StreamKeySecretMissing" and "nope" in ready["message"]

    # The operator keeps looking: once the Secret exists, the ingress becomes Ready.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "nope"},
            "stringData": {"streamKey": "LateKey12345"},
        }
    )

    async def now_ready() -> None:
        conditions = kubectl.get("lki", "dangling").get("status", {}).get("conditions", [])
        assert next(c for c in conditions if c["type"] == "Ready")["status"] == "True"

    await eventually(now_ready, within=30)
    kubectl.run("delete", "lki", "dangling", "--wait=true", "--timeout=30s")
    kubectl.run("delete", "secret", "nope")


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"inputType": "URL", "participantIdentity": "p", "roomName": "r"}, "spec.url", "url is required"),
        ({"inputType": "RTSP", "participantIdentity": "p"}, "spec.inputType", "Unsupported value"),
        ({"inputType": "RTMP"}, "spec.participantIdentity", "Required value"),
        (
            {
                "inputType": "RTMP",
                "participantIdentity": "p",
                "video": {"options": {"layers": [{"width": 1281, "height": 720}]}},
            },
            "spec.video.options.layers[0].width",
            "multiple of 2",
        ),
        (
            {"inputType": "RTMP", "participantIdentity": "p", "enableTranscoding": False},
            "spec.enableTranscoding",
            "only be disabled for WHIP",
        ),
    ],
)
def test_invalid_yaml_is_refused_by_the_api_server_naming_the_field(
    kubectl: Kubectl, spec: dict[str, Any], field: str, words: str
) -> None:
    proc = kubectl.apply(lki("invalid", **spec), check=False)
    assert proc.returncode != 0
    assert field in proc.stderr and words in proc.stderr


def test_input_type_is_immutable(kubectl: Kubectl) -> None:
    kubectl.apply(lki("fixed-type", inputType="RTMP", participantIdentity="p"))
    proc = kubectl.run(
        "patch", "lki", "fixed-type", "--type=merge", "-p", '{"spec":{"inputType":"URL"}}', check=False
    )
    assert proc.returncode != 0 and "inputType is immutable" in proc.stderr
    kubectl.run("delete", "lki", "fixed-type")


async def test_create_answers_at_once_with_the_complete_info(lkapi: api.LiveKitAPI, kubectl: Kubectl) -> None:
    info = await lkapi.ingress.create_ingress(
        api.CreateIngressRequest(
            input_type=api.IngressInput.RTMP_INPUT, name="n", room_name="at-once", participant_identity="p"
        )
    )
    assert info.ingress_id.startswith("IN_") and len(info.stream_key) == 12 and info.url
    # The CR exists with that id, and its owned Secret holds exactly that key.
    crs = kubectl.run("get", "lki", "-l", f"{ID_LABEL}={info.ingress_id}", "-o", "name").stdout.split()
    assert len(crs) == 1
    name = crs[0].split("/", 1)[1]
    secret = kubectl.get("secret", f"{name}-stream-key")
    assert base64.b64decode(secret["data"]["streamKey"]).decode() == info.stream_key
    assert (await list_by_id(lkapi, info.ingress_id)).stream_key == info.stream_key
    await lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=info.ingress_id))


async def test_update_of_an_errored_ingress_resets_it_to_inactive(
    lkapi: api.LiveKitAPI, kubectl: Kubectl
) -> None:
    info = await lkapi.ingress.create_ingress(
        api.CreateIngressRequest(input_type=api.IngressInput.RTMP_INPUT, participant_identity="p")
    )
    name = kubectl.run("get", "lki", "-l", f"{ID_LABEL}={info.ingress_id}", "-o", "name").stdout.strip()

    async def reconciled() -> None:
        assert kubectl.get(name).get("status", {}).get("observedGeneration") == 1

    await eventually(reconciled)
    error_state = '{"status":{"state":{"status":"ENDPOINT_ERROR","error":"boom"}}}'
    kubectl.run("patch", name, "--subresource=status", "--type=merge", "-p", error_state)
    await eventually(lambda: _state_is(lkapi, info.ingress_id, api.IngressState.ENDPOINT_ERROR))
    # An update that changes nothing in the spec still resets the state, as in LiveKit.
    updated = await lkapi.ingress.update_ingress(api.UpdateIngressRequest(ingress_id=info.ingress_id))
    assert updated.state.status == api.IngressState.ENDPOINT_INACTIVE
    assert (await list_by_id(lkapi, info.ingress_id)).state.status == api.IngressState.ENDPOINT_INACTIVE

    async def operator_reset() -> None:
        state = kubectl.get(name)["status"]["state"]
        assert state == {"status": "ENDPOINT_INACTIVE", "error": "boom"}

    await eventually(operator_reset)
    await lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=info.ingress_id))


async def _state_is(lkapi: api.LiveKitAPI, ingress_id: str, status: int) -> None:
    assert (await list_by_id(lkapi, ingress_id)).state.status == status


async def test_200_concurrent_creates_then_a_paginated_list_returns_each_exactly_once(
    lkapi: api.LiveKitAPI, stack_env: dict[str, str], kubectl: Kubectl
) -> None:
    room = "crowd"
    made = await asyncio.gather(
        *(
            lkapi.ingress.create_ingress(
                api.CreateIngressRequest(
                    input_type=api.IngressInput.RTMP_INPUT, room_name=room, participant_identity=f"p{i}"
                )
            )
            for i in range(200)
        )
    )
    ids = [i.ingress_id for i in made]
    assert len(set(ids)) == 200 and len({i.stream_key for i in made}) == 200
    assert len(kubectl.run("get", "lki", "-o", "name").stdout.split()) >= 200

    seen: list[str] = []
    token: str | None = ""
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {_token(stack_env)}"}
        for _ in range(50):
            body: dict[str, Any] = {"room_name": room, "page_token": {"token": token}}
            async with http.post(
                stack_env["LIVEKIT_URL"] + "/twirp/livekit.Ingress/ListIngress", json=body, headers=headers
            ) as resp:
                page = await resp.json()
                assert resp.status == 200, page
            seen += [item["ingress_id"] for item in page["items"]]
            token = (page["next_page_token"] or {}).get("token")
            if not token:
                break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    everything = await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name=room))
    assert sorted(i.ingress_id for i in everything.items) == sorted(ids)
    await asyncio.gather(*(lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=i)) for i in ids))


def _token(env: dict[str, str]) -> str:
    return (
        api.AccessToken(env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        .with_grants(api.VideoGrants(ingress_admin=True))
        .to_jwt()
    )


async def test_operator_killed_and_restarted_converges_with_nothing_lost(
    stack: Any, kubectl: Kubectl, kube: Kube
) -> None:
    """While the operator is down, CRs are created and deleted; once back, every live one has
    an id and a key, every deleted one is gone, and no Secret is left without its ingress."""
    for i in range(6):
        kubectl.apply(lki(f"restart-{i}", inputType="RTMP", roomName="restart", participantIdentity=f"p{i}"))

    async def reconciled(names: list[str]) -> None:
        for name in names:
            assert kubectl.get("lki", name).get("status", {}).get("ingressId")

    await eventually(lambda: reconciled([f"restart-{i}" for i in range(6)]))
    stack.kill_component("operator")
    for i in range(6, 12):
        kubectl.apply(lki(f"restart-{i}", inputType="WHIP", roomName="restart", participantIdentity=f"p{i}"))
    kubectl.run("delete", "lki", "restart-0", "restart-1", "restart-6", "--wait=false")
    stack.start_component("operator")

    live = [f"restart-{i}" for i in (2, 3, 4, 5, 7, 8, 9, 10, 11)]
    await eventually(lambda: reconciled(live), within=60)

    async def converged() -> None:
        names = set(kubectl.run("get", "lki", "-o", "name").stdout.split())
        assert not {f"livekitingress.ingress.lkop.dev/restart-{i}" for i in (0, 1, 6)} & names
        secrets = await secret_names(kube, kubectl.namespace)
        restart_secrets = {s for s in secrets if s.startswith("restart-")}
        assert restart_secrets == {f"{n}-stream-key" for n in live}

    await eventually(converged, within=60)
    kubectl.run("delete", "lki", *live, "--wait=true", "--timeout=60s")


async def test_room_service_through_the_same_url_reaches_livekit_server(lkapi: api.LiveKitAPI) -> None:
    room = await lkapi.room.create_room(api.CreateRoomRequest(name="proxied-room"))
    listed = await lkapi.room.list_rooms(api.ListRoomsRequest(names=["proxied-room"]))
    assert [r.sid for r in listed.rooms] == [room.sid]
    await lkapi.room.delete_room(api.DeleteRoomRequest(room="proxied-room"))


async def test_shim_exposes_health_and_call_metrics(lkapi: api.LiveKitAPI, stack_env: dict[str, str]) -> None:
    await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name="metrics-room"))
    async with aiohttp.ClientSession() as http:
        async with http.get(stack_env["LIVEKIT_URL"] + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(stack_env["LIVEKIT_URL"] + "/metrics") as resp:
            text = await resp.text()
    assert 'lki_shim_request_seconds_count{call="ListIngress",code="ok"}' in text


async def test_the_example_manifest_works_as_the_readme_says(kubectl: Kubectl) -> None:
    root = Path(__file__).parents[2]
    kubectl.run("apply", "-f", str(root / "examples" / "rtmp.yaml"))

    async def ready() -> None:
        status = kubectl.get("lki", "studio-cam").get("status", {})
        assert status.get("ingressId") and status.get("url", "").startswith("rtmp://")

    await eventually(ready)
    kubectl.run("delete", "lki", "studio-cam", "--wait=true", "--timeout=30s")


async def test_every_client_sees_the_same_ingresses(
    go: GoRun, node: NodeRun, lkapi: api.LiveKitAPI, kubectl: Kubectl, tmp_path: Path
) -> None:
    """One ingress made by each of kubectl, the Go SDK (`lk`'s path), the Node SDK and the Python
    SDK; each client lists all four, with the same ids and stream keys."""
    room = "every-client"
    kubectl.apply(lki("from-kubectl", inputType="RTMP", roomName=room, participantIdentity="kubectl"))
    request = tmp_path / "ingress.json"
    request.write_text(json.dumps({"input_type": 1, "room_name": room, "participant_identity": "go"}))
    rc, from_go = go("create", str(request))
    assert rc == 0, from_go
    from_node = node("create", {"inputType": "RTMP_INPUT", "roomName": room, "participantIdentity": "node"})
    from_python = await lkapi.ingress.create_ingress(
        api.CreateIngressRequest(
            input_type=api.IngressInput.URL_INPUT,
            room_name=room,
            participant_identity="python",
            url="http://127.0.0.1:9/x.mp4",
        )
    )

    async def listed_by_python() -> dict[str, str]:
        items = (await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name=room))).items
        assert len(items) == 4
        return {i.participant_identity: f"{i.ingress_id}/{i.stream_key}" for i in items}

    seen = await eventually(listed_by_python)
    assert seen["go"] == f"{from_go['ingress_id']}/{from_go['stream_key']}"
    assert seen["node"] == f"{from_node['ingressId']}/{from_node['streamKey']}"
    assert seen["python"] == f"{from_python.ingress_id}/"
    rc, by_go = go("list", "--room", room)
    assert rc == 0
    assert {i["participant_identity"]: f"{i['ingress_id']}/{i['stream_key']}" for i in by_go["items"]} == seen
    by_node = node("list", {"roomName": room})["items"]
    assert {i["participantIdentity"]: f"{i['ingressId']}/{i['streamKey']}" for i in by_node} == seen
    crs = json.loads(
        kubectl.run("get", "lki", "--field-selector", f"spec.roomName={room}", "-o", "json").stdout
    )
    assert {c["spec"]["participantIdentity"]: c["metadata"]["labels"][ID_LABEL] for c in crs["items"]} == {
        who: ids.split("/")[0] for who, ids in seen.items()
    }
    kubectl.run("delete", "lki", "--field-selector", f"spec.roomName={room}", "--wait=true", "--timeout=60s")


async def test_a_livekit_url_ending_in_a_slash_works(stack_env: dict[str, str]) -> None:
    """SDKs join LIVEKIT_URL and "/twirp/..."; with a trailing slash that is "//twirp/..."."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            stack_env["LIVEKIT_URL"] + "//twirp/livekit.Ingress/ListIngress",
            json={"room_name": "nobody-here"},
            headers={"Authorization": f"Bearer {_token(stack_env)}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["items"] == []


async def test_a_deleted_stream_key_secret_is_made_again(lkapi: api.LiveKitAPI, kubectl: Kubectl) -> None:
    info = await lkapi.ingress.create_ingress(
        api.CreateIngressRequest(input_type=api.IngressInput.RTMP_INPUT, participant_identity="p")
    )
    name = kubectl.run("get", "lki", "-l", f"{ID_LABEL}={info.ingress_id}", "-o", "name").stdout.strip()
    kubectl.run("delete", "secret", f"{name.split('/', 1)[1]}-stream-key")

    async def has_a_new_key() -> None:
        key = (await list_by_id(lkapi, info.ingress_id)).stream_key
        assert len(key) == 12 and key != info.stream_key

    await eventually(has_a_new_key, within=30)
    await lkapi.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=info.ingress_id))


async def test_a_copied_id_label_does_not_steal_the_ingress(kubectl: Kubectl, lkapi: api.LiveKitAPI) -> None:
    """A manifest copied with its ingress.lkop.dev/id label: the older CR keeps the id; the copy
    says why it is not Ready, and takes over once the original is gone."""
    kubectl.apply(lki("original", inputType="RTMP", roomName="dup-room", participantIdentity="original"))

    ingress_id = await reconciled_id(kubectl, "original")
    copy = lki("copy", inputType="RTMP", roomName="dup-room", participantIdentity="copy")
    copy["metadata"]["labels"] = {ID_LABEL: ingress_id}
    kubectl.apply(copy)

    async def copy_refused() -> None:
        ready = next(c for c in kubectl.get("lki", "copy")["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "DuplicateIngressId", ready

    await eventually(copy_refused)
    assert (await list_by_id(lkapi, ingress_id)).participant_identity == "original"

    kubectl.run("delete", "lki", "original", "--wait=true", "--timeout=30s")

    async def copy_took_over() -> None:
        items = (await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name="dup-room"))).items
        assert [(i.ingress_id, i.participant_identity) for i in items] == [(ingress_id, "copy")]

    await eventually(copy_took_over, within=60)
    kubectl.run("delete", "lki", "copy", "--wait=true", "--timeout=30s")


@pytest.mark.parametrize(
    "example",
    # kustomization.yaml is kustomize's input, not an object (tests/e2e/test_gitops.py renders it).
    sorted(
        p for p in (Path(__file__).parents[2] / "examples").glob("*.yaml") if p.name != "kustomization.yaml"
    ),
    ids=lambda p: p.name,
)
def test_every_example_manifest_is_accepted_by_the_api_server(kubectl: Kubectl, example: Path) -> None:
    applied = kubectl.run("apply", "--dry-run=server", "-f", str(example), check=False)
    assert applied.returncode == 0, applied.stderr
