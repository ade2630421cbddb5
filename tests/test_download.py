"""`python -m dragbench download`: against a local HTTP server serving a DragBench-layout zip built here."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from collections.abc import Iterator

import pytest

from dragbench.cli import main
from dragbench.download import DOWNLOAD_DIR, DRAGBENCH_URL, DownloadError, download_dragbench
from dragbench.synth import write_synthetic_bench

N = 5


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `self.server.payload` at /DragBench.zip, honouring `Range: bytes=N-` (206) like GitHub's CDN."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        payload: bytes = self.server.payload  # type: ignore[attr-defined]
        if self.path != "/DragBench.zip":
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(payload):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.requests.append((self.headers.get("Range"), len(body)))  # type: ignore[attr-defined]

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A zip with a top folder `DragBench/<category>/<name>/...` and macOS metadata (as release zips have)."""
    src = tmp_path_factory.mktemp("src")
    write_synthetic_bench(src / "DragBench", n=N, size=48, seed=1)
    archive = src / "DragBench.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((src / "DragBench").rglob("*")):
            z.write(path, path.relative_to(src).as_posix())
        z.writestr("__MACOSX/DragBench/._animals", b"junk")
    return archive.read_bytes()


@pytest.fixture
def server(payload: bytes) -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.payload, httpd.requests = payload, []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(server: http.server.HTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/DragBench.zip"


def test_official_url_is_the_dragdiffusion_release_asset():
    assert (
        DRAGBENCH_URL == "https://github.com/Yujun-Shi/DragDiffusion/releases/download/v0.1.1/DragBench.zip"
    )


def test_download_verifies_unpacks_the_official_layout_and_validates(tmp_path, server, payload, capsys):
    sha = hashlib.sha256(payload).hexdigest()
    root = tmp_path / "bench"
    assert main(["download", str(root), "--url", url_of(server), "--sha256", sha.upper()]) == 0
    out = capsys.readouterr().out
    assert f"{len(payload)} bytes, sha256 {sha} (verified)" in out
    assert f"all {N} samples valid" in out
    assert sorted(p.parent.relative_to(root).as_posix() for p in root.glob("*/*/original_image.png")) == [
        "animals/synthetic_0004",
        "art_work/synthetic_0000",
        "building_city_view/synthetic_0002",
        "building_countryside_view/synthetic_0003",
        "land_scape/synthetic_0001",
    ]
    assert not (root / "__MACOSX").exists() and not (root / "DragBench").exists()
    assert server.requests == [(None, len(payload))]
    assert main(["validate", str(root)]) == 0


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server, payload):
    root = tmp_path / "bench"
    part = root / DOWNLOAD_DIR / "DragBench.zip.part"
    part.parent.mkdir(parents=True)
    half = len(payload) // 2
    part.write_bytes(payload[:half])  # what an interrupted first run left behind
    got = download_dragbench(root, url=url_of(server), sha256=hashlib.sha256(payload).hexdigest())
    assert server.requests == [(f"bytes={half}-", len(payload) - half)]  # only the rest was sent
    assert got.size == len(payload) and got.n_samples == N and not part.exists()


def test_a_complete_part_file_is_not_downloaded_again(tmp_path, server, payload):
    root = tmp_path / "bench"
    part = root / DOWNLOAD_DIR / "DragBench.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload)
    assert download_dragbench(root, url=url_of(server)).n_samples == N
    assert server.requests == []  # 416 Range Not Satisfiable: nothing was sent


def test_bad_checksum_exits_1_deletes_the_file_and_unpacks_nothing(tmp_path, server, capsys):
    root = tmp_path / "bench"
    assert main(["download", str(root), "--url", url_of(server), "--sha256", "0" * 64]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checksum mismatch") and "0" * 64 in err[0]
    assert not (root / DOWNLOAD_DIR / "DragBench.zip").exists()
    assert sorted(p.name for p in root.iterdir()) == [DOWNLOAD_DIR]


def test_without_network_one_line_and_exit_1(tmp_path, capsys):
    port = free_port()
    code = main(["download", str(tmp_path / "bench"), "--url", f"http://127.0.0.1:{port}/DragBench.zip"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: cannot download") and "--url file:///" in err[0]


def test_refuses_a_root_that_already_holds_samples(tmp_path):
    write_synthetic_bench(tmp_path / "bench", n=2, size=48)
    with pytest.raises(DownloadError, match="already holds samples"):
        download_dragbench(tmp_path / "bench", url="http://127.0.0.1:9/DragBench.zip")


def test_zip_member_outside_the_root_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", b"x")
    with pytest.raises(DownloadError, match="outside the bench root"):
        download_dragbench(tmp_path / "bench", url=evil.resolve().as_uri())
    assert not (tmp_path / "outside.txt").exists()


def free_port() -> int:
    """A localhost port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
