"""Start the tritonserver binary of the nvidia-pytriton wheel on loopback, and stop it.

That binary carries only the python backend; its stub finds Python through PATH (the
environment holding numpy<2, onnxruntime and pytriton) and needs the CUDA runtime the
wheel bundles on LD_LIBRARY_PATH even on a CPU machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """`with TritonServer(repo, venv) as server:` serves `repo` on 127.0.0.1 until the block ends."""

    def __init__(self, repository: Path, venv: Path, timeout_s: float = 120.0):
        self.repository, self.venv, self.timeout_s = Path(repository), Path(venv), timeout_s
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self.process: subprocess.Popen | None = None
        self.log = ""

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _dist(self) -> Path:
        found = list(self.venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
        if not found:
            raise FileNotFoundError(f"no pytriton tritonserver in {self.venv} (run scripts/setup.sh)")
        return found[0]

    def __enter__(self) -> TritonServer:
        dist = self._dist()
        self._work = Path(tempfile.mkdtemp(prefix="pgb-triton-"))
        backends = self._work / "backends"
        shutil.copytree(dist / "backends", backends)
        version = next(self.venv.glob("lib/python3*")).name.removeprefix("python")
        shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
        libs = next(dist.parent.parent.glob("nvidia_pytriton.libs"))
        env = dict(os.environ, PATH=f"{self.venv / 'bin'}:{os.environ['PATH']}",
                   LD_LIBRARY_PATH=f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}")
        self._logfile = open(self._work / "server.log", "w+")
        self.process = subprocess.Popen(
            [str(dist / "bin" / "tritonserver"), f"--model-repository={self.repository}",
             f"--backend-directory={backends}", "--http-address=127.0.0.1", f"--http-port={self.http_port}",
             "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}", "--allow-metrics=false"],
            env=env, stdout=self._logfile, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._stop()
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self._stop()
        raise TimeoutError(f"tritonserver not ready after {self.timeout_s}s:\n{self.log[-3000:]}")

    def _stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # by its PID's process group
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._logfile.seek(0)
        self.log = self._logfile.read()
        self._logfile.close()
        shutil.rmtree(self._work, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self._stop()
