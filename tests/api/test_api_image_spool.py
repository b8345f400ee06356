"""The cell's image spool through the real server (server/images.py, api/images.py): admins'
uploads and downloads, digests checked at every write, bodies over the API's body limit
streamed, the agents' routes with their node token; and the image commands
(agent/image_ops.py) run against it, each run again to show it is harmless.

The helpers are shared with test_api_images.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx

from bollard.agent.drivers.sim import SimDriver
from bollard.agent.image_ops import ImageServer, perform_image
from bollard.domain.protocol import Answer, Command, Progress
from bollard.domain.states import CommandType
from bollard.sim.fabric import Fabric
from bollard.sim.storage import PoolKey, SimStorage
from tests.api.test_api_roles import add_user, as_token
from tests.api.test_api_vms import Cluster
from tests.api.test_api_volumes import make_volume, write
from tests.support.cluster import ServerThread

SHA = "X-Content-SHA256"
MIB = 1024 * 1024
LOCAL = {"name": "local", "type": "local", "path": ""}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(c: httpx.Client, image: str, disk: str, data: bytes, digest: str | None = None) -> Any:
    return c.put(f"/images/{image}/{disk}", content=data, headers={SHA: digest or sha(data)})


def spool_dir(server: ServerThread) -> Path:
    return server.config.data_dir / "images"


def spooled_files(server: ServerThread) -> list[str]:
    """Every file in the spool (hidden ones and those of uploads under way included)."""
    root = spool_dir(server)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def node_client(server: ServerThread, token_file: Path) -> httpx.Client:
    return httpx.Client(
        base_url=server.url + "/api/v1/agent",
        headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
        timeout=30,
    )


# -- the spool ------------------------------------------------------------------------------


def test_disks_are_written_listed_read_and_removed(cluster: Cluster) -> None:
    server = cluster[0]
    c = server.client
    small, big = b"a small disk", bytes(range(256)) * (12 * 1024)  # 3 MiB: over the body limit
    assert len(big) > server.config.max_body_bytes
    answer = put(c, "img-1", "vda", small)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"disk": "vda", "bytes": len(small), "sha256": sha(small)}
    assert put(c, "img-1", "vdb", big).status_code == 200
    assert c.get("/images/img-1").json() == {
        "image": "img-1",
        "disks": [
            {"disk": "vda", "bytes": len(small), "sha256": sha(small)},
            {"disk": "vdb", "bytes": len(big), "sha256": sha(big)},
        ],
    }
    got = c.get("/images/img-1/vdb")
    assert got.status_code == 200 and got.content == big
    assert got.headers[SHA] == sha(big) and got.headers["content-length"] == str(len(big))
    # Written again (an export run again): the same disk, the same bytes.
    assert put(c, "img-1", "vda", small).json()["sha256"] == sha(small)
    assert c.get("/images/img-1/vda").content == small
    assert c.delete("/images/img-1").status_code == 204
    assert c.get("/images/img-1").status_code == 404
    assert c.get("/images/img-1/vda").status_code == 404
    assert c.delete("/images/img-1").status_code == 204  # also when absent
    assert spooled_files(server) == []


def test_bytes_that_do_not_match_their_digest_are_refused_and_leave_nothing(
    cluster: Cluster,
) -> None:
    server = cluster[0]
    c = server.client
    data = b"x" * (2 * MIB)
    answer = put(c, "img-2", "vda", data, digest=sha(b"other bytes"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "sha256-mismatch"
    assert c.get("/images/img-2").status_code == 404
    assert spooled_files(server) == []
    # A disk there is not replaced by bytes that do not match.
    assert put(c, "img-2", "vda", data).status_code == 200
    assert put(c, "img-2", "vda", b"y" * 10, digest=sha(data)).status_code == 422
    assert c.get("/images/img-2/vda").content == data
    assert spooled_files(server) == ["img-2/.vda.sha256", "img-2/vda"]


def test_names_and_digests_are_checked_before_the_body_is_read(cluster: Cluster) -> None:
    c = cluster[0].client
    for image, disk in (("img", ".hidden"), ("..", "vda"), ("img", "a" * 65), (".x", "vda")):
        answer = put(c, image, disk, b"data")
        assert answer.status_code in (404, 422), (image, disk, answer.text)
    missing = c.put("/images/img/vda", content=b"data")
    assert missing.status_code == 422 and "X-Content-SHA256" in missing.json()["error"]["message"]
    bad = c.put("/images/img/vda", content=b"data", headers={SHA: "not-a-digest"})
    assert bad.status_code == 422
    assert c.get("/images/img").status_code == 404


def test_only_admins_manage_images_and_only_nodes_use_the_agents_routes(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster[0]
    c = server.client
    assert put(c, "img-3", "vda", b"data").status_code == 200
    _, operator_token = add_user(server, "olga", "operator")
    with as_token(server, operator_token) as operator:
        for method, path in (
            ("GET", "/images/img-3"), ("GET", "/images/img-3/vda"),
            ("PUT", "/images/img-3/vda"), ("DELETE", "/images/img-3"),
            ("POST", "/vms/x1/export"), ("POST", "/vms/x1/spawn"),
        ):  # fmt: skip
            answer = operator.request(method, path, json={"image": "x"})
            assert answer.status_code == 403, (method, path, answer.text)
            assert "image.manage" in answer.json()["error"]["message"]
    # The agents' routes take a node's token, and nothing else.
    with node_client(server, tmp_path / "node1.token") as node:
        assert node.get("/images/img-3/vda").content == b"data"
        data = b"from an agent"
        sent = node.put("/images/img-3/vdb", content=data, headers={SHA: sha(data)})
        assert sent.status_code == 200, sent.text
    assert c.get("/images/img-3/vdb").content == data
    for token in (server.token, operator_token, "not-a-token"):
        with httpx.Client(
            base_url=server.url + "/api/v1/agent", headers={"Authorization": f"Bearer {token}"}
        ) as other:
            assert other.get("/images/img-3/vda").status_code == 401
            refused = other.put("/images/img-3/vda", content=b"evil", headers={SHA: sha(b"evil")})
            assert refused.status_code == 401
    assert httpx.get(server.url + "/api/v1/agent/images/img-3/vda").status_code == 401
    assert c.get("/images/img-3/vda").content == b"data"


# -- the image commands, against the spool -------------------------------------------------


def _run(driver: SimDriver, server: ImageServer, command: Command) -> tuple[Answer, list[str]]:
    said: list[str] = []

    async def send(progress: Progress) -> None:
        said.append(progress.message)

    async def go() -> Answer:
        return await perform_image(driver, command, server, send, every=0.0)

    return asyncio.run(go()), said


def _command(cid: str, kind: CommandType, **args: Any) -> Command:
    return Command(id=cid, command=kind, args=args, timeout=60)


def test_each_image_command_run_again_is_harmless(cluster: Cluster, tmp_path: Path) -> None:
    server = cluster[0]
    c = server.client
    v = make_volume(c, "data", 10, node="node1")
    content = write(cluster, v, b"the volume's data")
    fabric = tmp_path / "fabric"
    node1, node2 = SimDriver(fabric, "node1", latency=0.0), SimDriver(fabric, "node2", latency=0.0)
    token = (tmp_path / "node1.token").read_text().strip()
    images = ImageServer(server.url, token, None)

    export = _command("exp-1", CommandType.VOLUME_EXPORT, pool=LOCAL, file=v["file"],
                      image="img-4", disk="vda")  # fmt: skip
    first, said = _run(node1, images, export)
    assert first.ok, first
    again, _ = _run(node1, images, export)
    assert again.ok and again.result == first.result
    result = first.result
    assert (result["format"], result["size_mb"], result["checksum"]) == ("qcow2", 10, content)
    assert said[0].startswith("volume_export read:") and said[-1] == "volume_export upload: 100%"
    assert c.get("/images/img-4").json()["disks"] == [
        {"disk": "vda", "bytes": result["bytes"], "sha256": result["sha256"]}
    ]

    args = {"pool": LOCAL, "file": "copy-of-data.qcow2", "format": "qcow2", "size_mb": 10,
            "image": "img-4", "disk": "vda", "sha256": result["sha256"]}  # fmt: skip
    imported, said = _run(node2, images, _command("imp-1", CommandType.VOLUME_IMPORT, **args))
    assert imported.ok, imported
    assert imported.result["volume"]["file"] == "copy-of-data.qcow2"
    assert said[-1] == "volume_import download: 100%"
    again, said = _run(node2, images, _command("imp-2", CommandType.VOLUME_IMPORT, **args))
    assert again.ok and again.result == imported.result and said == []  # nothing downloaded
    storage = SimStorage(Fabric(fabric))
    rec = storage.get("node2", PoolKey("local", "local"), "copy-of-data.qcow2", time.time())
    assert rec is not None and rec.checksum == content

    # An import whose digest is not the image's leaves nothing; a file there with other
    # content is refused.
    wrong = args | {"file": "other.qcow2", "sha256": sha(b"something else")}
    refused, _ = _run(node2, images, _command("imp-3", CommandType.VOLUME_IMPORT, **wrong))
    assert not refused.ok and refused.error is not None
    assert refused.error.code == "sha256-mismatch", refused.error
    assert storage.get("node2", PoolKey("local", "local"), "other.qcow2", time.time()) is None
    storage.write("node2", PoolKey("local", "local"), "copy-of-data.qcow2", [b"!"], time.time())
    taken, _ = _run(node2, images, _command("imp-4", CommandType.VOLUME_IMPORT, **args))
    assert not taken.ok and taken.error is not None and taken.error.code == "invalid-state"
    # An image the spool does not have.
    absent = args | {"image": "img-none", "file": "x.qcow2"}
    missing, _ = _run(node2, images, _command("imp-5", CommandType.VOLUME_IMPORT, **absent))
    assert missing.error is not None and missing.error.code == "not-found", missing
