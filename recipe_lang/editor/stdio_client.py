"""A minimal LSP client over a server process's stdin/stdout, as an editor
drives one: used by the tests and the latency bench."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time


class StdioClient:
    def __init__(self, command: list[str], env: dict | None = None, cwd: str | None = None):
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd
        )
        self.responses: dict[int, dict] = {}
        self.notifications: queue.Queue = queue.Queue()
        self.changed = threading.Condition()
        self.next_id = 0
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()

    # --- sending ---------------------------------------------------------------

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def notify(self, method: str, params: dict | None = None) -> None:
        self.send({"method": method, "params": params or {}})

    def request(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        """The response's message (with `result` or `error`)."""
        self.next_id += 1
        ident = self.next_id
        self.send({"id": ident, "method": method, "params": params or {}})
        with self.changed:
            if not self.changed.wait_for(lambda: ident in self.responses, timeout):
                raise TimeoutError(f"no answer to {method} in {timeout}s")
            return self.responses.pop(ident)

    # --- receiving -------------------------------------------------------------

    def diagnostics(self, uri: str, timeout: float = 30, until=lambda params: True) -> dict:
        """The next publishDiagnostics for uri whose params satisfy `until`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching diagnostics for {uri} in {timeout}s")
            try:
                message = self.notifications.get(timeout=left)
            except queue.Empty:
                continue
            params = message.get("params", {})
            if message.get("method") == "textDocument/publishDiagnostics" and params.get("uri") == uri:
                if until(params):
                    return params

    def drain(self) -> None:
        while not self.notifications.empty():
            self.notifications.get_nowait()

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            message = json.loads(stream.read(length))
            if "id" in message and "method" not in message:
                with self.changed:
                    self.responses[message["id"]] = message
                    self.changed.notify_all()
            elif "id" in message:  # a request from the server (e.g. a registration): accept it
                self.send({"id": message["id"], "result": None})
            else:
                self.notifications.put(message)

    # --- the session -----------------------------------------------------------

    def initialize(self, root_uri: str | None = None, encodings=("utf-16",)) -> dict:
        capabilities = {"general": {"positionEncodings": list(encodings)}, "textDocument": {}}
        answer = self.request("initialize", {"processId": None, "rootUri": root_uri, "capabilities": capabilities})
        self.notify("initialized")
        return answer["result"]

    def open(self, uri: str, text: str, version: int = 1) -> None:
        document = {"uri": uri, "languageId": "ftr", "version": version, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": document})

    def change(self, uri: str, text: str, version: int) -> None:
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
        )

    def close(self, timeout: float = 10) -> int:
        """shutdown and exit; the server's exit status."""
        self.request("shutdown", timeout=timeout)
        self.notify("exit")
        try:
            return self.process.wait(timeout)
        finally:
            self.process.stdin.close()


def ftr_lsp_command() -> list[str]:
    return [sys.executable, "-c", "import sys; from recipe_lang.cli import main; sys.exit(main(['lsp']))"]
