"""HTTP serving: endpoints, every limit and error code, batch invariance, auth, metrics, the page."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtst.modeling.model import MultiTaskModel
from mtst.serve import ServeSettings, create_app
from tests.conftest import SENTENCES, free_port, make_tasks

httpx = pytest.importorskip("httpx")


@pytest.fixture
def model(tiny_backbone_dir: Path) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel.from_backbone(make_tasks(), backbone=str(tiny_backbone_dir))


def client(model: MultiTaskModel, **settings: object):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    return TestClient(create_app(model, ServeSettings(**settings), "tiny"))


def test_endpoints(model: MultiTaskModel) -> None:
    with client(model) as c:
        assert c.get("/health").json() == {"status": "ok"}
        info = c.get("/info").json()
        assert set(info["tasks"]) == {"category", "sentiment"} and info["limits"]["max_texts"] == 64
        assert info["precision"] == "fp32"
        pred = c.post("/predict", json={"texts": SENTENCES[:2], "tasks": ["category"]}).json()["predictions"]
        assert [set(p) for p in pred] == [{"category"}, {"category"}]
        assert pred == [{"category": r["category"]} for r in model.predict(SENTENCES[:2], tasks=["category"])]
        emb = np.array(c.post("/encode", json={"texts": SENTENCES}).json()["embeddings"])
        assert np.allclose(emb, model.encode(SENTENCES), atol=1e-5)
        scores = c.post("/similarity", json={"a": SENTENCES[:2], "b": SENTENCES[:3]}).json()["scores"]
        assert np.array(scores).shape == (2, 3) and abs(scores[0][0] - 1.0) < 1e-5
        assert c.get("/openapi.json").json()["paths"].keys() >= {"/predict", "/encode", "/similarity"}
        assert c.get("/docs").status_code == 404  # no page that needs a CDN to render
        page = c.get("/").text
        assert "tiny" in page and "/predict" in page
        metrics = c.get("/metrics").text
        assert 'mtst_requests_total{path="/predict",status="200"} 1' in metrics
        assert "mtst_request_seconds_bucket" in metrics and "mtst_batch_texts_count" in metrics


def test_batch_invariance(model: MultiTaskModel) -> None:
    """A text in a batch gets what it gets alone, whatever else shares its forward pass."""

    async def go() -> tuple[list, list]:
        app = create_app(model, ServeSettings(batch_wait_ms=50), "tiny")
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            alone = [(await c.post("/predict", json={"texts": [t]})).json()["predictions"][0] for t in SENTENCES]
            together = await asyncio.gather(*(c.post("/predict", json={"texts": [t]}) for t in SENTENCES))
            return alone, [r.json()["predictions"][0] for r in together]

    alone, together = asyncio.run(go())
    for a, b in zip(alone, together, strict=True):
        for task in a:
            assert a[task]["label"] == b[task]["label"]
            assert np.allclose(
                list(a[task]["probabilities"].values()), list(b[task]["probabilities"].values()), atol=1e-5
            )


def test_limits(model: MultiTaskModel) -> None:
    with client(model, max_texts=3, max_chars=20, max_body_bytes=500) as c:
        r = c.post("/predict", json={"texts": ["a"] * 4})
        assert r.status_code == 422 and "limit of 3" in r.json()["detail"]
        r = c.post("/encode", json={"texts": ["x" * 21]})
        assert r.status_code == 422 and "limit of 20" in r.json()["detail"]
        r = c.post("/predict", json={"texts": ["a"], "tasks": ["nope"]})
        assert r.status_code == 422 and "nope" in r.json()["detail"]
        r = c.post("/predict", content=json.dumps({"texts": ["y" * 600]}), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit of 500" in r.json()["detail"]
        assert c.post("/predict", json={"wrong": 1}).status_code == 422


def test_api_key(model: MultiTaskModel) -> None:
    with client(model, api_key="s3cret") as c:
        assert c.post("/predict", json={"texts": ["a"]}).status_code == 401
        assert c.post("/predict", json={"texts": ["a"]}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/predict", json={"texts": ["a"]}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/predict", json={"texts": ["a"]}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200


def test_concurrency_cap_and_timeout(model: MultiTaskModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from mtst.serve.batcher import MicroBatcher

    real = MicroBatcher._infer

    def slow(self, texts):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return real(self, texts)

    monkeypatch.setattr(MicroBatcher, "_infer", slow)

    async def go(settings: ServeSettings, n: int) -> list[int]:
        app = create_app(model, settings, "tiny")
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            started = time.perf_counter()
            codes = [
                r.status_code
                for r in await asyncio.gather(*(c.post("/predict", json={"texts": ["a"]}) for _ in range(n)))
            ]
            assert time.perf_counter() - started < 5, "limits answer fast, never hang"
            return codes

    codes = asyncio.run(go(ServeSettings(max_concurrency=2, batch_wait_ms=0), 6))
    assert codes.count(200) == 2 and codes.count(429) == 4
    assert asyncio.run(go(ServeSettings(timeout_s=0.05), 1)) == [504]


def test_slow_senders_do_not_hold_concurrency_slots(model: MultiTaskModel) -> None:
    """Requests still sending their body are not admitted: ready requests get through, and a body
    that does not arrive within the read timeout gets 408."""

    async def go() -> tuple[list[int], list[int]]:
        settings = ServeSettings(max_concurrency=2, read_timeout_s=0.5, batch_wait_ms=0)
        app = create_app(model, settings, "tiny")
        transport = httpx.ASGITransport(app=app)

        async def dribble() -> Any:  # a body that never finishes arriving
            yield b'{"texts": '
            await asyncio.sleep(5)
            yield b'["a"]}'

        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            slow = [
                asyncio.create_task(c.post("/predict", content=dribble(), headers={"content-length": "17"}))
                for _ in range(6)
            ]
            await asyncio.sleep(0.1)  # the slow ones are all sending
            ready = await asyncio.gather(*(c.post("/predict", json={"texts": ["b"]}) for _ in range(2)))
            return [r.status_code for r in ready], [r.status_code for r in await asyncio.gather(*slow)]

    started = time.perf_counter()
    ready, slow = asyncio.run(go())
    assert ready == [200, 200]
    assert slow == [408] * 6
    assert time.perf_counter() - started < 4


def test_bytes_that_are_not_utf8_are_named_by_index(model: MultiTaskModel) -> None:
    body = b'{"texts": ["fine", "caf\xe9 au lait"]}'
    with client(model) as c:
        r = c.post("/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert "texts[1]" in r.json()["detail"] and "not valid Unicode" in r.json()["detail"]
        r = c.post("/predict", content=b"{not json \xff", headers={"content-type": "application/json"})
        assert r.status_code in (400, 422)  # no JSON at all: answered by the framework, as before


def start_server(run: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``mtst serve RUN`` in a child process; returns once /health answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mtst", "serve", str(run), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return server, url
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.2)
    server.kill()
    raise AssertionError("the server did not come up")


def test_late_request_heads_are_cut_off(model: MultiTaskModel, tmp_path: Path) -> None:
    """Over real sockets: clients that never finish their headers are closed after --read-timeout, and a
    ready client is served while 80 of them hang on."""
    import socket

    model.save(tmp_path / "m")
    server, url = start_server(tmp_path / "m", "--read-timeout", "1", "--max-concurrency", "4")
    port = int(url.rsplit(":", 1)[1])
    hanging = []
    try:
        for _ in range(80):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
            hanging.append(sock)
        body = json.dumps({"texts": ["a ready request"]}).encode()
        request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
        started = time.perf_counter()
        assert hanging[0].recv(1024) == b""  # closed by the server, without an answer
        assert time.perf_counter() - started < 3
    finally:
        for sock in hanging:
            sock.close()
        server.terminate()
        server.wait(timeout=20)


def test_load_on_loopback(model: MultiTaskModel, tmp_path: Path) -> None:
    """16 concurrent clients, 400 requests over real sockets: no errors, and requests share forward passes."""
    model.save(tmp_path / "m")
    server, url = start_server(tmp_path / "m")

    async def client_loop(c: httpx.AsyncClient, i: int) -> list[int]:
        codes = []
        for j in range(25):
            r = await c.post("/predict", json={"texts": [SENTENCES[(i + j) % len(SENTENCES)]]})
            codes.append(r.status_code)
        return codes

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            results = await asyncio.gather(*(client_loop(c, i) for i in range(16)))
        return [code for codes in results for code in codes]

    try:
        codes = asyncio.run(go())
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert codes == [200] * 400
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line.startswith("mtst_batch")}
    passes, texts = values["mtst_batch_texts_count"], values["mtst_batch_texts_sum"]
    assert texts == 400 and passes < 400, "concurrent requests were never batched together"


def test_several_server_processes(model: MultiTaskModel, tmp_path: Path) -> None:
    """--workers 2: both processes answer as the model does, and stopping the server stops them."""
    model.save(tmp_path / "m")
    server, url = start_server(tmp_path / "m", "--workers", "2")
    try:
        info = json.loads(urllib.request.urlopen(f"{url}/info", timeout=10).read())
        assert info["workers"] == 2
        body = json.dumps({"texts": SENTENCES[:3]}).encode()
        got = []
        for _ in range(6):  # fresh connections, spread over the processes
            req = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
            got.append(json.loads(urllib.request.urlopen(req, timeout=30).read())["predictions"])
        children = {int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()}
    finally:
        server.terminate()
        server.wait(timeout=30)
    expected = model.predict(SENTENCES[:3])
    for predictions in got:
        for a, b in zip(predictions, expected, strict=True):
            for task in ("category", "sentiment"):
                assert a[task]["label"] == b[task]["label"]
                assert np.allclose(
                    list(a[task]["probabilities"].values()), list(b[task]["probabilities"].values()), atol=1e-5
                )
    assert len(children) >= 2

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    for _ in range(150):
        if not any(running(p) for p in children):
            break
        time.sleep(0.1)
    assert not [p for p in children if running(p)], "worker processes outlived the server"


@pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("MTST_REQUIRE_BROWSER"),
    reason="needs Debian's chromium (apt install chromium); .ci/run requires it (MTST_REQUIRE_BROWSER)",
)
def test_page_in_headless_chromium(model: MultiTaskModel, tmp_path: Path) -> None:
    """Load the page, submit a sentence, read the predicted labels from the rendered DOM."""
    model.save(tmp_path / "m")
    server, base = start_server(tmp_path / "m")
    try:
        url = f"{base}/?text=" + urllib.parse.quote("The pan rusted.")
        dom = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=10000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        server.terminate()
        server.wait(timeout=20)
    expected = model.predict(["The pan rusted."])[0]
    for task in ("category", "sentiment"):
        assert f'data-task="{task}">{expected[task]["label"]}<' in dom, dom[-2000:]


def test_served_model_packs_its_batches(model: MultiTaskModel, tmp_path: Path) -> None:
    """A loaded model is served packed where its backbone allows (``/info`` says so), with the outputs of
    offline ``predict``; ``packing=False`` (``--no-packing``) pads."""
    from fastapi.testclient import TestClient

    from mtst.serve.server import load_served

    path = model.save(tmp_path / "m")
    texts = [*SENTENCES, "ok", "a much longer text than any of the others, " * 5]
    expected = model.predict(texts)
    for packing in (True, False):
        settings = ServeSettings(packing=packing)
        served = load_served(path, settings)
        assert (served.encoder.packing is not None) == packing
        with TestClient(create_app(served, settings, "m")) as c:
            assert c.get("/info").json()["packing"] is packing
            got = c.post("/predict", json={"texts": texts}).json()["predictions"]
            emb = np.array(c.post("/encode", json={"texts": texts}).json()["embeddings"])
        assert [{t: p[t]["label"] for t in p} for p in got] == [{t: p[t]["label"] for t in p} for p in expected]
        for g, e in zip(got, expected, strict=True):
            for task in g:
                assert g[task]["probabilities"] == pytest.approx(e[task]["probabilities"], abs=1e-5)
        np.testing.assert_allclose(emb, model.encode(texts), atol=1e-5)
