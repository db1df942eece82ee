"""An HTTP/JSON server over a pipeline: ``trimformer serve MODEL`` (standard library only).

Endpoints (JSON in, JSON out):

- ``POST /predict`` (encoder tasks): ``{"inputs": X, "parameters": {...}}`` where X is one input or a list of
  them, as the task's pipeline takes them: a text; ``{"text": ..., "text_pair": ...}`` (text-classification);
  ``{"question": ..., "context": ...}`` (question-answering). Answer: ``{"task": ..., "outputs": Y}``: for a list,
  the pipeline's results for that list (embeddings as lists of floats); for one input, its element of them (so a
  text-classification input gets ``{"label", "score"}``, where the pipeline called on one text wraps it in a list).
- ``POST /generate`` (decoders): ``{"prompt": "...", "parameters": {"max_new_tokens": 32, ...}}`` ->
  ``{"task": "text-generation", "generated_text": ...}``; parameters are ``DecoderEngine.generate``'s
  (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``seed``, ...) plus ``chat`` and
  ``return_full_text``. With ``"stream": true`` (beside ``prompt``) the answer is a server-sent event stream
  (``text/event-stream``): ``data: {"token": piece}`` as the text grows, then ``data: {"generated_text": ...,
  "done": true}`` (or ``data: {"error": ...}``), and the connection closes.
- ``GET /health`` -> ``{"status": "ok"}``; ``GET /info`` -> the model, task, limits and counters.

One worker thread owns the engine (its forward pass already uses every core it was given); HTTP threads only
parse, queue and wait. Requests run in arrival order; /generate requests one at a time (no batched decoding). Dynamic batching (off by default: ``max_batch=1``): /predict requests that arrive within
``max_wait_ms`` of the first queued one and carry the same parameters run through the pipeline as one call of up to
``max_batch`` inputs, which the pipeline pads into length-sorted batches; their results are split back per request.
If that joint call fails, each request is run alone, so that one bad input fails only its own request. On the
2-core development machine joint calls did not raise the throughput of all-MiniLM-L6-v2 on single sentences, and
waiting for requests to join lowered it:
``bench/bench_serve.py``, ``bench/results/serve_minilm.md``; measure before turning it on.

Errors are JSON ``{"error": ...}`` with a status: 400 bad JSON, fields, inputs or parameters; 404 unknown path;
405 wrong method; 411 no Content-Length; 413 a body over ``max_body_bytes`` or more than ``max_inputs`` inputs;
500 an unexpected failure (the server keeps serving); 503 a request that waited longer than
``request_timeout_s``.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .pipelines.base import jsonable

__all__ = ["ModelServer", "RequestError"]


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)


@dataclass
class _Job:
    kind: str  # "predict" | "generate"
    items: list[Any]
    params: dict[str, Any]
    single: bool
    key: str = ""  # requests with equal keys may share a pipeline call
    pieces: queue.Queue | None = None  # streamed generation: text pieces, then None
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its open connections, so that shutting down also ends idle keep-alive ones
    (whose handler threads would otherwise wait for a next request, holding the engine, until the process exits)."""

    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._open: set[Any] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def end_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for request in open_now:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ModelServer:
    """Serves one pipeline (``trimformer.pipeline(...)`` or a TextGenerationPipeline) over HTTP.

    server = ModelServer(pipe, port=0); server.start()  # background thread; server.url
    ...; server.shutdown()
    ``serve_forever()`` runs in the calling thread instead (the CLI).
    """

    def __init__(self, pipe: Any, *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 1,
                 max_wait_ms: float = 0.0, max_inputs: int = 256, max_body_bytes: int = 1 << 20,
                 request_timeout_s: float = 300.0, model_name: str = "", access_log: bool = False):
        if max_batch < 1 or max_inputs < 1 or max_body_bytes < 1:
            raise ValueError("max_batch, max_inputs and max_body_bytes must be >= 1")
        if max_wait_ms < 0 or request_timeout_s <= 0:
            raise ValueError("max_wait_ms must be >= 0 and request_timeout_s > 0")
        self.pipe = pipe
        self.task = getattr(pipe, "task", "")
        self.generates = self.task == "text-generation"
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1e3
        self.max_inputs = int(max_inputs)
        self.max_body_bytes = int(max_body_bytes)
        self.request_timeout_s = float(request_timeout_s)
        self.model_name = model_name
        self.access_log = access_log
        self.requests = 0  # requests answered by the worker (counters for /info and tests)
        self.pipeline_calls = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._stats = threading.Lock()
        self._httpd = _HTTPServer((host, int(port)), self._handler_class())
        self._worker = threading.Thread(target=self._work, name="trimformer-serve-worker", daemon=True)
        self._worker.start()
        self._serving: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ModelServer:
        """Serve in a background thread."""
        self._serving = threading.Thread(target=self._httpd.serve_forever, name="trimformer-serve-http", daemon=True)
        self._serving.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until KeyboardInterrupt (or SIGTERM, which the CLI turns into one)."""
        try:
            self._httpd.serve_forever()
        finally:
            self._close()

    def shutdown(self) -> None:
        """Stop accepting requests, answer the queued ones, end open connections and join every thread."""
        if self._serving is not None:
            self._httpd.shutdown()
            self._serving.join()
            self._serving = None
        self._close()

    def _close(self) -> None:
        self._stop_worker()  # queued requests are answered first
        self._httpd.end_connections()
        self._httpd.server_close()  # joins the handler threads

    def _stop_worker(self) -> None:
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()

    def info(self) -> dict[str, Any]:
        engine = getattr(self.pipe, "engine", None)
        out: dict[str, Any] = {"model": self.model_name, "task": self.task,
                               "endpoint": "/generate" if self.generates else "/predict",
                               "max_batch": self.max_batch, "max_wait_ms": self.max_wait_s * 1e3,
                               "max_inputs": self.max_inputs, "max_body_bytes": self.max_body_bytes,
                               "requests": self.requests, "pipeline_calls": self.pipeline_calls,
                               "queued": self._queue.qsize()}
        if engine is not None:
            out["engine"] = repr(engine)
        if not self.generates and hasattr(self.pipe, "max_length"):
            out["max_length"] = self.pipe.max_length
        return out

    # -------------------------------------------------------------------------------------------------- requests

    def wait(self, job: _Job) -> dict[str, Any]:
        """The answer to a queued request (raises its RequestError, or 503 past request_timeout_s)."""
        if not job.done.wait(self.request_timeout_s):
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE,
                               f"no answer within {self.request_timeout_s:g} s (the server is overloaded)")
        if job.error is not None:
            raise job.error
        return job.result

    def enqueue(self, path: str, body: Any) -> _Job:
        """Validate one decoded JSON body for `path` and queue it (raises RequestError)."""
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        params = body.get("parameters", {})
        if not isinstance(params, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "'parameters' must be a JSON object")
        if path == "/predict":
            if self.generates:
                raise RequestError(HTTPStatus.NOT_FOUND, "this server runs a decoder: POST /generate")
            unknown = set(body) - {"inputs", "parameters"}
            if unknown:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown field(s) {sorted(unknown)}; "
                                                           "expected 'inputs' and optional 'parameters'")
            if "inputs" not in body:
                raise RequestError(HTTPStatus.BAD_REQUEST, "missing 'inputs'")
            inputs = body["inputs"]
            single = not isinstance(inputs, list)
            items = [inputs] if single else list(inputs)
            if not items:
                raise RequestError(HTTPStatus.BAD_REQUEST, "'inputs' is an empty list")
            if len(items) > self.max_inputs:
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"{len(items)} inputs in one request; this server takes at most {self.max_inputs}")
            for x in items:
                if not isinstance(x, (str, dict)):
                    raise RequestError(HTTPStatus.BAD_REQUEST, "each input must be a string or a JSON object, "
                                                               f"not {type(x).__name__}")
            job = _Job("predict", items, params, single, key=json.dumps(params, sort_keys=True))
        elif path == "/generate":
            if not self.generates:
                raise RequestError(HTTPStatus.NOT_FOUND, f"this server runs a {self.task} model: POST /predict")
            unknown = set(body) - {"prompt", "parameters", "stream"}
            if unknown:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown field(s) {sorted(unknown)}; "
                                                           "expected 'prompt', optional 'parameters' and 'stream'")
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise RequestError(HTTPStatus.BAD_REQUEST, "'prompt' must be a non-empty string")
            if "stream" in params:
                raise RequestError(HTTPStatus.BAD_REQUEST, "'stream' is a field of the body, not a parameter")
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                raise RequestError(HTTPStatus.BAD_REQUEST, "'stream' must be true or false")
            job = _Job("generate", [prompt], params, True, pieces=queue.Queue() if stream else None)
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no endpoint {path}")
        self._queue.put(job)
        return job

    # ---------------------------------------------------------------------------------------------------- worker

    def _work(self) -> None:
        held: list[_Job] = []  # taken from the queue while filling a batch, not joinable with it
        while True:
            job = held.pop(0) if held else self._queue.get()
            if job is None:
                for rest in held:  # answer what was already taken, then stop
                    self._run([rest])
                return
            group = [job]
            if job.kind == "predict":
                count = len(job.items)
                deadline = time.monotonic() + self.max_wait_s
                while count < self.max_batch and not held:
                    wait = deadline - time.monotonic()
                    try:
                        nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if (nxt is not None and nxt.kind == "predict" and nxt.key == job.key
                            and count + len(nxt.items) <= self.max_batch):
                        group.append(nxt)
                        count += len(nxt.items)
                    else:
                        held.append(nxt)  # run after this group (None: stop after it)
            self._run(group)

    def _run(self, group: list[_Job]) -> None:
        try:
            results = self._call(group)
        except Exception as e:  # noqa: BLE001 - every failure becomes that request's answer
            if len(group) > 1:
                for job in group:
                    self._run([job])
                return
            group[0].error = self._as_request_error(e)
            self._finish(group[0])
            with self._stats:
                self.requests += 1
            return
        for job, result in zip(group, results, strict=True):
            job.result = result
            self._finish(job)
        with self._stats:
            self.requests += len(group)

    @staticmethod
    def _finish(job: _Job) -> None:
        job.done.set()
        if job.pieces is not None:
            job.pieces.put(None)

    def _call(self, group: list[_Job]) -> list[dict[str, Any]]:
        with self._stats:
            self.pipeline_calls += 1
        first = group[0]
        if first.kind == "generate":
            kw = {"stream": first.pieces.put} if first.pieces is not None else {}
            out = self.pipe(first.items[0], **first.params, **kw)
            return [{"task": self.task, "generated_text": out[0]["generated_text"]}]
        items = [x for job in group for x in job.items]
        out = self.pipe(items, **first.params)
        rows = list(out)  # a list of results, or an array with one row per input (embeddings)
        if len(rows) != len(items):
            raise RuntimeError(f"the pipeline returned {len(rows)} results for {len(items)} inputs")
        answers, at = [], 0
        for job in group:
            mine = rows[at:at + len(job.items)]
            at += len(job.items)
            answers.append({"task": self.task, "outputs": jsonable(mine[0] if job.single else mine)})
        return answers

    @staticmethod
    def _as_request_error(e: Exception) -> RequestError:
        if isinstance(e, RequestError):
            return e
        from .runtime.decoder import GenerationError

        if isinstance(e, (ValueError, TypeError, KeyError, GenerationError)):
            return RequestError(HTTPStatus.BAD_REQUEST, f"{type(e).__name__}: {e}")
        return RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")

    # ------------------------------------------------------------------------------------------------------ HTTP

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "trimformer-serve"
            protocol_version = "HTTP/1.1"
            timeout = 120  # seconds a keep-alive connection may sit idle (or a body take to arrive)
            # TCP_NODELAY: the headers and the body leave in two writes, and Nagle's algorithm held the second
            # until the client's delayed ACK
            disable_nagle_algorithm = True

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, job: _Job) -> None:
                """Server-sent events: each text piece as it comes, then the whole text (or the error); then close."""
                self.close_connection = True
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()

                def event(payload: dict[str, Any]) -> None:
                    self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                    self.wfile.flush()

                deadline = time.monotonic() + server.request_timeout_s
                try:
                    while True:
                        try:
                            piece = job.pieces.get(timeout=max(deadline - time.monotonic(), 0.001))
                        except queue.Empty:
                            event({"error": f"no answer within {server.request_timeout_s:g} s"})
                            return
                        if piece is None:
                            break
                        event({"token": piece})
                    if job.error is not None:
                        event({"error": str(job.error)})
                    else:
                        event({**job.result, "done": True})
                except OSError:  # the client went away: the generation finishes unread
                    return

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/health":
                    self._send(HTTPStatus.OK, {"status": "ok"})
                elif self.path == "/info":
                    self._send(HTTPStatus.OK, server.info())
                elif self.path in ("/predict", "/generate"):
                    self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.path} takes POST"})
                else:
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                try:
                    if self.path in ("/health", "/info"):
                        raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.path} takes GET")
                    length = self.headers.get("Content-Length")
                    if length is None:
                        self.close_connection = True  # a body, if any, is not read
                        raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
                    try:
                        n = int(length)
                    except ValueError:
                        raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
                    if n < 0 or n > server.max_body_bytes:
                        self.close_connection = True  # the body is not read
                        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                           f"a {n}-byte body; this server takes at most {server.max_body_bytes}")
                    raw = self.rfile.read(n)
                    try:
                        body = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError) as e:
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({e})") from None
                    job = server.enqueue(self.path, body)
                    if job.pieces is not None:
                        self._stream(job)
                    else:
                        self._send(HTTPStatus.OK, server.wait(job))
                except RequestError as e:
                    self._send(e.status, {"error": str(e)})
                except Exception as e:  # noqa: BLE001 - answer, never drop the connection silently
                    self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"})

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                if server.access_log:
                    super().log_message(format, *args)

        return Handler
