"""trimformer.serve: the HTTP server over a pipeline (results equal the pipeline's, dynamic batching, bad requests
answered with clear errors while the server keeps serving), and the `serve` CLI."""

from __future__ import annotations

import http.client
import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from trimformer.pipelines import pipeline  # noqa: E402
from trimformer.serve import ModelServer  # noqa: E402

TEXTS = ["great movie", "a rather long and boring sentence about nothing at all", "ok", "the plot was thin",
         "superb acting and a fine score", "why", "two words", "an average film with a strong ending"]


@pytest.fixture(scope="module")
def classifier(minilm):
    """A tiny random BERT classifier (3 labels) with MiniLM's tokenizer, as a text-classification pipeline."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, num_labels=3,
                                  initializer_range=0.5)
    model = transformers.BertForSequenceClassification(cfg).eval()
    return pipeline("text-classification", model=model, tokenizer=minilm / "tokenizer.json")


def _request(server: ModelServer, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _raw_without_length(server: ModelServer) -> tuple[int, dict]:
    """A POST without Content-Length (http.client always sends one)."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _post(server: ModelServer, path: str, payload) -> tuple[int, dict]:
    data = json.dumps(payload).encode()
    return _request(server, "POST", path, data, {"Content-Type": "application/json"})


def _plain(x):
    return json.loads(json.dumps(x, default=lambda v: v.tolist() if hasattr(v, "tolist") else v.item()))


def test_predict_equals_the_pipeline(classifier):
    server = ModelServer(classifier, port=0, max_wait_ms=0).start()
    try:
        status, got = _post(server, "/predict", {"inputs": TEXTS[0]})
        assert status == 200 and got == {"task": "text-classification", "outputs": _plain(classifier([TEXTS[0]])[0])}
        status, got = _post(server, "/predict", {"inputs": TEXTS, "parameters": {"top_k": 2}})
        assert status == 200 and got["outputs"] == _plain(classifier(TEXTS, top_k=2))
        assert len(got["outputs"]) == len(TEXTS) and all(len(r) == 2 for r in got["outputs"])
        pair = {"text": TEXTS[0], "text_pair": TEXTS[1]}
        status, got = _post(server, "/predict", {"inputs": [pair]})
        assert status == 200 and got["outputs"] == _plain(classifier([pair]))
        status, info = _request(server, "GET", "/info")
        assert status == 200 and info["task"] == "text-classification" and info["endpoint"] == "/predict"
        assert info["requests"] == 3 and info["queued"] == 0 and info["max_length"] == classifier.max_length
        assert _request(server, "GET", "/health") == (200, {"status": "ok"})
    finally:
        server.shutdown()


def test_concurrent_requests_share_pipeline_calls(classifier):
    # 8 clients at once: requests with equal parameters queued within max_wait_ms run as one pipeline call
    # (up to max_batch inputs); each client still gets exactly its own results
    server = ModelServer(classifier, port=0, max_wait_ms=500, max_batch=16).start()
    per_client = [TEXTS[i:i + 1 + i % 3] for i in range(8)]
    results: dict[int, tuple[int, dict]] = {}
    start = threading.Barrier(len(per_client))

    def client(i: int) -> None:
        start.wait()
        results[i] = _post(server, "/predict", {"inputs": per_client[i]})

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(per_client))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, texts in enumerate(per_client):
            assert results[i] == (200, {"task": "text-classification", "outputs": _plain(classifier(texts))})
        assert server.requests == 8 and server.pipeline_calls < 8
    finally:
        server.shutdown()


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(classifier):
    server = ModelServer(classifier, port=0, max_wait_ms=0, max_inputs=4, max_body_bytes=2000).start()
    try:
        def post_raw(data: bytes):
            return _request(server, "POST", "/predict", data, {"Content-Type": "application/json"})

        cases = [
            (post_raw(b"{not json"), 400, "not JSON"),
            (post_raw(b"[1, 2]"), 400, "JSON object"),
            (_post(server, "/predict", {}), 400, "missing 'inputs'"),
            (_post(server, "/predict", {"inputs": "x", "extra": 1}), 400, "unknown field"),
            (_post(server, "/predict", {"inputs": []}), 400, "empty"),
            (_post(server, "/predict", {"inputs": [3]}), 400, "string or a JSON object"),
            (_post(server, "/predict", {"inputs": "x", "parameters": {"nope": 1}}), 400, "unknown option"),
            (_post(server, "/predict", {"inputs": "x", "parameters": []}), 400, "'parameters'"),
            (_post(server, "/predict", {"inputs": [{"txt": "x"}]}), 400, "'text' key"),
            (_post(server, "/predict", {"inputs": ["a"] * 5}), 413, "at most 4"),
            (post_raw(json.dumps({"inputs": "x" * 3000}).encode()), 413, "at most 2000"),
            (_raw_without_length(server), 411, "Content-Length"),
            (_request(server, "POST", "/predict", b"", {}), 400, "not JSON"),
            (_post(server, "/generate", {"prompt": "hi"}), 404, "POST /predict"),
            (_post(server, "/nowhere", {"inputs": "x"}), 404, "no endpoint"),
            (_request(server, "GET", "/predict"), 405, "takes POST"),
            (_request(server, "POST", "/info", b"{}", {"Content-Length": "2"}), 405, "takes GET"),
            (_request(server, "GET", "/nowhere"), 404, "no endpoint"),
        ]
        for (status, body), want_status, want_text in cases:
            assert status == want_status and want_text in body["error"], (status, body, want_text)
        assert _post(server, "/predict", {"inputs": TEXTS[:2]}) == (
            200, {"task": "text-classification", "outputs": _plain(classifier(TEXTS[:2]))})
    finally:
        server.shutdown()


def test_a_bad_input_fails_only_its_own_request(classifier):
    # two requests queued together: their joint call fails on the bad one, so each runs alone
    server = ModelServer(classifier, port=0, max_batch=8, max_wait_ms=500).start()
    out: dict[str, tuple[int, dict]] = {}
    start = threading.Barrier(2)

    def client(name: str, inputs) -> None:
        start.wait()
        out[name] = _post(server, "/predict", {"inputs": inputs})

    try:
        threads = [threading.Thread(target=client, args=("good", TEXTS[:3])),
                   threading.Thread(target=client, args=("bad", [TEXTS[0], {"text_pair": "no text"}]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out["good"] == (200, {"task": "text-classification", "outputs": _plain(classifier(TEXTS[:3]))})
        assert out["bad"][0] == 400 and "'text' key" in out["bad"][1]["error"]
    finally:
        server.shutdown()


def test_sentence_embeddings_of_the_real_minilm(minilm):
    pipe = pipeline("sentence-embedding", model=minilm)
    server = ModelServer(pipe, port=0, max_wait_ms=0).start()
    try:
        status, got = _post(server, "/predict", {"inputs": TEXTS[:3]})
        assert status == 200 and got["task"] == "sentence-embedding"
        want = pipe(TEXTS[:3])
        assert np.array_equal(np.asarray(got["outputs"], np.float32), want)
        status, one = _post(server, "/predict", {"inputs": TEXTS[0]})
        assert status == 200 and np.array_equal(np.asarray(one["outputs"], np.float32), want[0])
    finally:
        server.shutdown()


def _word_tokenizer(n: int) -> Tokenizer:
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(n)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_generate_equals_the_pipeline():
    from trimformer.pipelines.text_generation import TextGenerationPipeline
    from trimformer.runtime.decoder import compile_decoder

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    pipe = TextGenerationPipeline(compile_decoder(transformers.LlamaForCausalLM(cfg).eval()), _word_tokenizer(97))
    server = ModelServer(pipe, port=0).start()
    try:
        status, got = _post(server, "/generate", {"prompt": "w5 w17 w3", "parameters": {"max_new_tokens": 6}})
        want = pipe("w5 w17 w3", max_new_tokens=6)[0]["generated_text"]
        assert status == 200 and got == {"task": "text-generation", "generated_text": want}
        status, got = _post(server, "/generate", {"prompt": "w5", "parameters": {"max_new_tokens": 3,
                                                                                  "return_full_text": False}})
        assert status == 200 and got["generated_text"] == pipe("w5", max_new_tokens=3,
                                                               return_full_text=False)[0]["generated_text"]
        # streamed: the pieces as server-sent events, then the whole text; the same text as unstreamed
        body = json.dumps({"prompt": "w5 w17 w3", "stream": True, "parameters": {"max_new_tokens": 6}})
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        events = [json.loads(line[len("data: "):]) for line in resp.read().decode().split("\n\n") if line]
        conn.close()
        assert events[-1] == {"task": "text-generation", "generated_text": want, "done": True}
        assert len(events) > 2 and "w5 w17 w3" + "".join(e["token"] for e in events[:-1]) == want
        # a generation that fails after the stream began ends it with an error event
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/generate", body=json.dumps({"prompt": "w5", "stream": True,
                                                           "parameters": {"max_new_tokens": -1}}))
        resp = conn.getresponse()
        events = [json.loads(line[len("data: "):]) for line in resp.read().decode().split("\n\n") if line]
        conn.close()
        assert resp.status == 200 and len(events) == 1 and "error" in events[0]
        for payload, want_status, text in (({"prompt": ""}, 400, "non-empty"),
                                           ({"prompt": "w1", "parameters": {"max_new_tokens": -1}}, 400, ""),
                                           ({"prompt": "w1", "parameters": {"stream": True}}, 400, "field"),
                                           ({"prompt": "w1", "stream": "yes"}, 400, "true or false"),
                                           ({"inputs": "w1"}, 400, "unknown field")):
            status, body = _post(server, "/generate", payload)
            assert status == want_status and text in body["error"], (payload, status, body)
        assert _post(server, "/predict", {"inputs": "w1"})[0] == 404
        assert _post(server, "/generate", {"prompt": "w2 w3"})[0] == 200
    finally:
        server.shutdown()


def test_serve_cli_rejects_bad_arguments_before_listening(minilm, tmp_path):
    from trimformer.cli.main import main

    assert main(["serve", str(tmp_path / "missing")]) != 0
    assert main(["serve", str(minilm), "--weights", "int4-g128"]) != 0
    assert main(["serve", str(minilm), "--task", "question-answering"]) != 0
    busy = ModelServer(pipeline("sentence-embedding", model=minilm), port=0)
    try:
        port = busy.url.rsplit(":", 1)[1]
        assert main(["serve", str(minilm), "--port", port]) != 0  # the port is taken: a clear error
    finally:
        busy.shutdown()


def test_serve_cli_end_to_end(minilm):
    # `trimformer serve` in its own process (the HF checkpoint compiled to INT8 on the way): it prints its URL,
    # answers, and SIGTERM stops it cleanly (exit 0)
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "trimformer", "serve", str(minilm), "--port", "0", "--threads", "1",
           "--quantize", "int8-dynamic"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        deadline = time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        m = re.search(r"http://([\d.]+):(\d+)", line)
        assert m, line
        conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=60)
        conn.request("POST", "/predict", body=json.dumps({"inputs": ["hello world"]}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        got = json.loads(resp.read())
        conn.close()
        want = pipeline("sentence-embedding", model=minilm, quantize="int8-dynamic")(["hello world"])
        assert resp.status == 200 and np.array_equal(np.asarray(got["outputs"], np.float32), want)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("task", ["question-answering", "token-classification"])
def test_qa_and_token_classification(minilm, task):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128, num_labels=3,
                                  initializer_range=0.5)
    cls = (transformers.BertForQuestionAnswering if task == "question-answering"
           else transformers.BertForTokenClassification)
    pipe = pipeline(task, model=cls(cfg).eval(), tokenizer=minilm / "tokenizer.json")
    server = ModelServer(pipe, port=0, max_batch=8, max_wait_ms=0).start()
    try:
        if task == "question-answering":
            items = [{"question": "where is the cat?", "context": "the cat sat on the mat in the kitchen"},
                     {"question": "who wrote it?", "context": "it was written by a tired engineer at night"}]
            params = {"top_k": 2}
            bad = ({"inputs": {"question": "only a question"}}, "question")
        else:
            items = ["Paris is in France", "the quick brown fox"]
            params = {"aggregation_strategy": "none"}
            bad = ({"inputs": [{"text": "a dict"}]}, "")
        status, got = _post(server, "/predict", {"inputs": items, "parameters": params})
        assert status == 200 and got == {"task": task, "outputs": _plain(pipe(items, **params))}
        status, one = _post(server, "/predict", {"inputs": items[0], "parameters": params})
        assert status == 200 and one["outputs"] == _plain(pipe(items, **params))[0]
        status, body = _post(server, "/predict", bad[0])
        assert status == 400 and bad[1] in body["error"]
    finally:
        server.shutdown()
