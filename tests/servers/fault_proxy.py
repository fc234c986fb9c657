#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 proxy for testing S3 clients against a local S3 server.

The proxy listens on 127.0.0.1 by default and forwards every request unchanged
to one upstream server (moto or Garage in r2sync's tests). The Host header stays
as the client sent it, because SigV4 signatures cover it. When the upstream
cannot be reached, the client gets 502 BadGateway.

With --rate above 0 the proxy replaces a random share of requests with a fault
(see FAULT_KINDS). Faults are drawn from random.Random(--seed) in the order in
which request heads arrive. So one client connection that sends the same
requests gets the same faults, but with concurrent connections the arrival
order, and so the assignment, can vary. With --r2 the proxy also emulates three
Cloudflare R2 behaviours that the local servers lack (see R2Emulator).

Tests start it on port 0 and read the bound port from --port-file:

    python3 tests/servers/fault_proxy.py --upstream http://127.0.0.1:9000 \\
        --port-file /tmp/proxy.port --rate 0.2 --seed 7 --stats-file /tmp/stats.json

and then use http://127.0.0.1:PORT as the client's endpoint. Control endpoints
on the same port are never faulted and never counted:

    GET  /__proxy/stats    counters of requests, bytes, faults and R2 responses (JSON)
    GET  /__proxy/config   the current settings (JSON)
    POST /__proxy/config   change any of rate, seed, faults, r2, stall_seconds and match
                           with a JSON object; a new seed restarts the random sequence
    POST /__proxy/reset    set every counter to zero

On SIGTERM or SIGINT the proxy writes the counters to --stats-file and exits.
--log appends one line per proxied request: method, target (presigned-URL
credentials redacted), outcome and latency, such as
`PUT /bucket/key fault=503 0.4ms`, `GET /bucket?list-type=2 200 7.6ms` or
`PUT /bucket/key r2=412 5.4ms`.
`python3 tests/servers/fault_proxy.py --self-test` runs a unittest suite against
an upstream started in a thread. Python 3.11 standard library only.
"""

import argparse
import asyncio
import collections
import concurrent.futures
import dataclasses
import email.utils
import http
import http.client
import http.server
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from xml.sax.saxutils import escape as xml_escape

LOG = logging.getLogger("fault_proxy")

CONTROL_PREFIX = "/__proxy/"

# Maximum length of a message head and of a chunk-size line, in bytes. Also the
# buffer limit of every asyncio stream the proxy reads.
MAX_LINE_BYTES = 256 * 1024

UPSTREAM_CONNECT_TIMEOUT_SECONDS = 10

# What each fault does:
#   500, 503          S3 error response (InternalError, ServiceUnavailable), not forwarded
#   429               429 SlowDown without Retry-After, not forwarded
#   429-retry-after   429 SlowDown with Retry-After: 1, not forwarded
#   reset-before      TCP reset of the client connection, not forwarded
#   reset-after       forwarded, then a TCP reset in place of the upstream's response
#   stall             no response, and the connection closes after --stall-seconds,
#                     or earlier when the client closes it
#   200-error         200 with an S3 <Error> body, not forwarded. S3 does this only for
#                     CopyObject and CompleteMultipartUpload, so other requests draw
#                     another kind.
FAULT_KINDS = (
    "500",
    "503",
    "429",
    "429-retry-after",
    "reset-before",
    "reset-after",
    "stall",
    "200-error",
)

# The faults that send an S3 error response: kind -> (status, error code,
# extra headers).
ERROR_FAULTS = {
    "500": (500, "InternalError", ()),
    "503": (503, "ServiceUnavailable", ()),
    "429": (429, "SlowDown", ()),
    "429-retry-after": (429, "SlowDown", (("Retry-After", "1"),)),
    "200-error": (200, "InternalError", ()),
}

ERROR_MESSAGES = {
    "InternalError": "fault_proxy injected an internal error. Please retry the request.",
    "ServiceUnavailable": "fault_proxy injected a service unavailable error. Please retry.",
    "SlowDown": "fault_proxy injected throttling. Please reduce your request rate.",
}

# R2 accepts one write per second to the same object key and returns 429 for
# the others.
R2_WRITE_INTERVAL_SECONDS = 1.0

# Query parameters of presigned URLs that must not reach the request log.
SECRET_QUERY_FIELDS = {"x-amz-signature", "x-amz-credential", "x-amz-security-token"}

CHUNK_SIZE_PATTERN = re.compile(rb"[0-9A-Fa-f]+")


class ProtocolError(Exception):
    """An HTTP message that the proxy cannot parse or frame."""


class UpstreamClosed(Exception):
    """The upstream closed the connection before sending any byte of a response."""


# ---- HTTP messages ----


@dataclasses.dataclass(kw_only=True)
class Message:
    """The parts of an HTTP message that the proxy routes on, with its head and
    body bytes exactly as received."""

    version: str
    headers: list[tuple[str, str]]
    # Start line and header fields, with the blank line that ends them.
    head: bytes
    # Chunk-size lines and trailer fields included, for a chunked body.
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Return the values of the field `name` (in lowercase) joined with
        ", ", or None when absent."""
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None

    def header_tokens(self, name: str) -> list[str]:
        value = self.header(name) or ""
        return [token.strip().lower() for token in value.split(",") if token.strip()]

    @property
    def keep_alive(self) -> bool:
        tokens = self.header_tokens("connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclasses.dataclass(kw_only=True)
class Request(Message):
    method: str
    target: str

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> dict[str, list[str]]:
        query = self.target.partition("?")[2]
        return urllib.parse.parse_qs(query, keep_blank_values=True)

    @property
    def has_body(self) -> bool:
        return bool(transfer_codings(self)) or (content_length(self) or 0) > 0

    @property
    def expects_continue(self) -> bool:
        expect = (self.header("expect") or "").lower()
        return expect == "100-continue" and self.version == "HTTP/1.1" and self.has_body


@dataclasses.dataclass(kw_only=True)
class Response(Message):
    status: int
    # True when the body ends where the connection closes (no length, not chunked).
    close_delimited: bool = False
    # True when an interim 1xx response, such as 100 Continue, came first.
    continued: bool = False

    @property
    def keep_alive(self) -> bool:
        return super().keep_alive and not self.close_delimited


def transfer_codings(message: Message) -> list[str]:
    return message.header_tokens("transfer-encoding")


def is_decimal(text: str) -> bool:
    # str.isdigit() alone also accepts non-ASCII digits such as "²".
    return text.isascii() and text.isdigit()


def content_length(message: Message) -> int | None:
    """Return the Content-Length value, or None when absent.

    Raises ProtocolError for a value that is not a decimal number, or for
    several fields that disagree.
    """
    value = message.header("content-length")
    if value is None:
        return None
    values = {item.strip() for item in value.split(",")}
    if len(values) != 1:
        raise ProtocolError(f"conflicting Content-Length values {value!r}")
    text = values.pop()
    if not is_decimal(text):
        raise ProtocolError(f"invalid Content-Length {text!r}")
    return int(text)


# ---- Reading messages from a stream ----


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """Read through the blank line that ends a message head.

    Returns None when the stream ends before the first byte of a head.
    """
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise ProtocolError("connection closed inside a message head") from error
    except asyncio.LimitOverrunError as error:
        raise ProtocolError(f"message head longer than {MAX_LINE_BYTES} bytes") from error


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"invalid header line {line!r}")
        headers.append((name, value.strip()))
    return lines[0], headers


async def read_request_head(reader: asyncio.StreamReader) -> Request | None:
    """Read the next request head. Returns None when the client closed the
    connection between requests."""
    while True:
        head = await read_head(reader)
        if head is None:
            return None

        # A client may send empty lines between requests, which servers ignore.
        head = head.lstrip(b"\r\n")
        if head:
            break

    start_line, headers = parse_head(head)
    parts = start_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError(f"invalid request line {start_line!r}")
    method, target, version = parts
    return Request(method=method, target=target, version=version, headers=headers, head=head)


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """Read through the next CRLF."""
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError as error:
        raise ProtocolError(f"line longer than {MAX_LINE_BYTES} bytes in a chunked body") from error


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked body and return its bytes unchanged: chunk-size lines,
    chunk data, the last chunk and the trailer section."""
    parts = []
    while True:
        size_line = await read_line(reader)
        parts.append(size_line)
        size_text = size_line.split(b";", 1)[0].strip()
        if not CHUNK_SIZE_PATTERN.fullmatch(size_text):
            raise ProtocolError(f"invalid chunk-size line {size_line!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        data = await reader.readexactly(size + 2)
        if not data.endswith(b"\r\n"):
            raise ProtocolError("chunk data not followed by CRLF")
        parts.append(data)

    # The trailer section is zero or more field lines and a blank line.
    while True:
        line = await read_line(reader)
        parts.append(line)
        if line == b"\r\n":
            return b"".join(parts)


async def read_request_body(reader: asyncio.StreamReader, request: Request) -> bytes:
    codings = transfer_codings(request)
    if codings:
        if codings[-1] != "chunked":
            raise ProtocolError(f"unsupported request Transfer-Encoding {codings!r}")
        return await read_chunked(reader)

    length = content_length(request)
    if not length:
        return b""
    return await reader.readexactly(length)


async def read_response(reader: asyncio.StreamReader, request_method: str) -> Response:
    """Read the final response to one request, skipping interim 1xx responses.

    Raises UpstreamClosed when the connection ends or is reset before the first
    byte of the response.
    """
    continued = False
    while True:
        try:
            head = await read_head(reader)
        except ConnectionResetError as error:
            if continued:
                raise
            raise UpstreamClosed(f"connection reset: {error}") from error
        if head is None:
            if continued:
                raise ProtocolError("upstream closed the connection after an interim 1xx response")
            raise UpstreamClosed("connection closed before the response")

        response = parse_response_head(head)
        if not 100 <= response.status < 200:
            break
        continued = True

    response.continued = continued
    response.body, response.close_delimited = await read_response_body(
        reader, request_method, response
    )
    return response


def parse_response_head(head: bytes) -> Response:
    start_line, headers = parse_head(head)
    version, _, rest = start_line.partition(" ")
    status_text = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or len(status_text) != 3 or not is_decimal(status_text):
        raise ProtocolError(f"invalid status line {start_line!r}")
    return Response(version=version, status=int(status_text), headers=headers, head=head)


async def read_response_body(
    reader: asyncio.StreamReader, request_method: str, response: Response
) -> tuple[bytes, bool]:
    """Read a response body. Returns the body and whether it was close-delimited."""
    if request_method == "HEAD" or response.status in (204, 304):
        return b"", False

    codings = transfer_codings(response)
    if codings and codings[-1] == "chunked":
        return await read_chunked(reader), False

    # A Transfer-Encoding other than chunked makes the body close-delimited,
    # whatever the Content-Length value.
    length = None if codings else content_length(response)
    if length is not None:
        return await reader.readexactly(length), False
    return await reader.read(), True


# ---- Responses the proxy writes itself ----


def build_response(
    status: int, headers: list[tuple[str, str]], body: bytes, request: Request
) -> bytes:
    """Serialize a response to the request with Content-Length framing.

    A response to HEAD gets Content-Length: 0 and no body. The response carries
    Connection: close when the client asked to close the connection.
    """
    if request.method == "HEAD":
        body = b""
    fields = [("Date", email.utils.formatdate(usegmt=True)), *headers]
    fields.append(("Content-Length", str(len(body))))
    if not request.keep_alive:
        fields.append(("Connection", "close"))

    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
    lines.extend(f"{name}: {value}" for name, value in fields)
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + body


def build_s3_error(
    status: int,
    code: str,
    message: str,
    request: Request,
    request_id: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{xml_escape(message)}</Message>"
        f"<Resource>{xml_escape(request.path)}</Resource>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode("utf-8")
    headers = [
        ("Content-Type", "application/xml"),
        ("x-amz-request-id", request_id),
        *extra_headers,
    ]
    return build_response(status, headers, body, request)


def build_json_response(status: int, value: object, request: Request) -> bytes:
    body = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")
    return build_response(status, [("Content-Type", "application/json")], body, request)


# ---- Settings, counters and fault selection ----


@dataclasses.dataclass
class Settings:
    rate: float = 0.0
    seed: int = 1
    faults: tuple[str, ...] = FAULT_KINDS
    r2: bool = False
    stall_seconds: float = 30.0
    # Regular expression on "METHOD target"; when set, only matching requests
    # can get a fault.
    match: str = ""

    def to_json(self) -> dict:
        return dict(dataclasses.asdict(self), faults=list(self.faults))


def parse_rate(value: object) -> float:
    rate = parse_number("rate", value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"invalid rate {value!r}: expected a number from 0 to 1")
    return rate


def parse_match(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"invalid match {value!r}: expected a regular expression")
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"invalid match {value!r}: {error}") from None
    return value


def parse_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid seed {value!r}: expected an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"invalid seed {value!r}: expected an integer") from None


def parse_faults(value: object) -> tuple[str, ...]:
    """Parse a list of fault kinds, or one string of kinds separated by commas."""
    if isinstance(value, str):
        kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    elif isinstance(value, list) and all(isinstance(kind, str) for kind in value):
        kinds = value
    else:
        raise ValueError(f"invalid faults {value!r}: expected a list of fault kinds")

    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(
            f"invalid faults {value!r}: expected one or more of {', '.join(FAULT_KINDS)}"
        )
    return tuple(dict.fromkeys(kinds))


def parse_stall_seconds(value: object) -> float:
    seconds = parse_number("stall_seconds", value)
    if seconds < 0:
        raise ValueError(f"invalid stall_seconds {value!r}: expected 0 or more seconds")
    return seconds


def parse_number(name: str, value: object) -> float:
    """Parse a finite number given as a JSON number or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid {name} {value!r}: expected a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"invalid {name} {value!r}: expected a number") from None
    if not math.isfinite(number):
        raise ValueError(f"invalid {name} {value!r}: expected a finite number")
    return number


class Stats:
    """Counters of the proxied requests, control requests excluded."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_from_client = 0
        self.bytes_to_client = 0
        self.faults = dict.fromkeys(FAULT_KINDS, 0)
        self.r2 = {"429": 0, "501": 0, "412": 0}

    def to_json(self) -> dict:
        return {
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "bytes_from_client": self.bytes_from_client,
            "bytes_to_client": self.bytes_to_client,
            "faults": dict(self.faults),
            "r2": dict(self.r2),
        }


def accepts_200_error(request: Request) -> bool:
    """Return whether S3 can respond to the request with 200 and an error body:
    CopyObject (PUT with x-amz-copy-source) and CompleteMultipartUpload (POST
    with uploadId)."""
    if request.method == "PUT":
        return request.header("x-amz-copy-source") is not None
    return request.method == "POST" and "uploadId" in request.query


class FaultPicker:
    """A seeded generator that draws a fault kind, or none, for each request."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def reseed(self, seed: int) -> None:
        self.random = random.Random(seed)

    def draw(self, request: Request, settings: Settings) -> str | None:
        # Every request takes exactly two numbers from the generator, so one
        # request's outcome never shifts the draws of the requests after it.
        roll = self.random.random()
        pick = self.random.random()
        if roll >= settings.rate:
            return None
        if settings.match and not re.search(settings.match, f"{request.method} {request.target}"):
            return None

        candidates = [
            kind for kind in settings.faults if kind != "200-error" or accepts_200_error(request)
        ]
        if not candidates:
            return None
        return candidates[int(pick * len(candidates))]


# ---- Cloudflare R2 emulation ----


def is_object_write(request: Request) -> bool:
    """Return whether the request writes an object: PutObject, CopyObject or
    CompleteMultipartUpload. UploadPart (PUT with uploadId) is not a write of
    the object. A bucket-level PUT such as CreateBucket counts as a write too,
    because the path alone does not show whether a request is path-style."""
    query = request.query
    if request.method == "PUT":
        return "uploadId" not in query and "partNumber" not in query
    return request.method == "POST" and "uploadId" in query


class R2Emulator:
    """Emulates three Cloudflare R2 behaviours that moto and Garage lack.

    - A write to an object key within R2_WRITE_INTERVAL_SECONDS after the last
      successful write to that key gets 429. Cloudflare's R2 limits page
      (developers.cloudflare.com/r2/platform/limits) allows one write per
      second to the same key and names 429 for faster writes.
    - Object tagging (an x-amz-tagging header or a tagging query parameter)
      gets 501 NotImplemented.
    - A PUT with If-Match on a missing key gets 412 PreconditionFailed, where
      moto 5.2 returns 404 NoSuchKey.

    The server comparison table in docs/operations.md lists the last two
    differences.
    """

    def __init__(self) -> None:
        # (Host header, request path) -> time.monotonic() of the last 2xx write.
        self.last_writes: dict[tuple[str, str], float] = {}

    def check_request(self, request: Request) -> tuple[int, str, str] | None:
        """Return the (status, S3 error code, message) that R2 would send
        without storing anything, or None when R2 would process the request."""
        if request.header("x-amz-tagging") is not None or "tagging" in request.query:
            return 501, "NotImplemented", "R2 emulation: object tagging is not implemented."

        if is_object_write(request):
            last_write = self.last_writes.get(self.object_id(request))
            if last_write is not None:
                elapsed = time.monotonic() - last_write
                if elapsed < R2_WRITE_INTERVAL_SECONDS:
                    return 429, "SlowDown", (
                        "R2 emulation: the same object key was written "
                        f"{elapsed:.3f} s ago, and R2 allows one write per second per key."
                    )
        return None

    def review_response(self, request: Request, status: int) -> tuple[int, str, str] | None:
        """Record a successful write, and return the (status, S3 error code,
        message) that replaces the upstream's response, or None to keep it."""
        if request.method == "PUT" and request.header("if-match") is not None and status == 404:
            return 412, "PreconditionFailed", (
                "R2 emulation: the If-Match precondition failed because the object does not exist."
            )

        if is_object_write(request) and 200 <= status < 300:
            self.last_writes[self.object_id(request)] = time.monotonic()
        return None

    @staticmethod
    def object_id(request: Request) -> tuple[str, str]:
        # Virtual-hosted-style requests name the bucket only in the Host header.
        return request.header("host") or "", request.path


# ---- Connections ----


class UpstreamLink:
    """A keep-alive connection to the upstream server, used by one client
    connection for its requests in turn and reopened when the upstream closes it."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: Request) -> Response:
        """Send the request unchanged and return the upstream's final response.

        When a reused connection ends before the first response byte, the
        request is sent once more on a new connection, because the upstream may
        have closed the idle connection while the request was on its way.
        NOTE: this resends non-idempotent requests too, so in that rare case
        the upstream can receive a POST twice.
        """
        attempts = 2 if self.writer is not None else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self.send_and_receive(request)
            except UpstreamClosed as error:
                self.close()
                if attempt == attempts:
                    raise
                LOG.info("upstream closed an idle connection (%s), so resending %s %s "
                         "on a new connection", error, request.method, request.path)
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    async def send_and_receive(self, request: Request) -> Response:
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None

        try:
            self.writer.write(request.head)
            self.writer.write(request.body)
            await self.writer.drain()
        except ConnectionError as error:
            raise UpstreamClosed(f"sending the request failed: {error}") from error

        response = await read_response(self.reader, request.method)

        # Without a 100 Continue, the upstream may have responded to an Expect
        # request without reading its body, so the connection cannot be reused.
        if not response.keep_alive or (request.expects_continue and not response.continued):
            self.close()
        return response

    async def connect(self) -> None:
        host, port = self.address
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_LINE_BYTES),
            timeout=UPSTREAM_CONNECT_TIMEOUT_SECONDS,
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = None
        self.writer = None


class ClientConnection:
    """One connection from a client, with its own link to the upstream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_address: tuple[str, int],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = writer.get_extra_info("peername")
        self.upstream = UpstreamLink(upstream_address)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Close the connection with a TCP RST instead of a FIN.

        With SO_LINGER on and a zero timeout, closing the socket discards
        unsent data and sends RST.
        """
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close_after(self, seconds: float) -> None:
        """Close the connection after the given seconds, or earlier when the
        client closes it. Bytes the client sends meanwhile are discarded."""
        try:
            await asyncio.wait_for(self.discard_until_eof(), timeout=seconds)
        except TimeoutError:
            pass
        self.close()

    async def discard_until_eof(self) -> None:
        while await self.reader.read(65536):
            pass

    def close(self) -> None:
        self.upstream.close()
        if not self.writer.is_closing():
            self.writer.close()


@dataclasses.dataclass
class Reply:
    """Bytes to send to the client for one request."""

    data: bytes
    # Status code or fault kind, for the request log.
    outcome: str
    # Whether the client connection stays open after the reply.
    keep_alive: bool


# ---- The proxy ----


class FaultProxy:
    """The proxy server: forwards requests, injects faults and serves the
    control endpoints."""

    def __init__(
        self,
        upstream_address: tuple[str, int],
        settings: Settings,
        request_log=None,
    ) -> None:
        self.upstream_address = upstream_address
        self.settings = settings
        self.picker = FaultPicker(settings.seed)
        self.r2 = R2Emulator()
        self.stats = Stats()
        self.request_log = request_log
        self.request_ids = itertools.count(1)
        self.server: asyncio.Server | None = None
        self.connection_tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> int:
        """Start listening and return the bound port."""
        self.server = await asyncio.start_server(
            self.handle_connection, host, port, limit=MAX_LINE_BYTES, backlog=1024
        )
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every open client connection."""
        if self.server is not None:
            self.server.close()
        tasks = list(self.connection_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        self.connection_tasks.add(task)
        connection = ClientConnection(reader, writer, self.upstream_address)
        try:
            while await self.serve_next_request(connection):
                pass
        except ProtocolError as error:
            LOG.warning("invalid request from %s, closing the connection: %s",
                        connection.peer, error)
            await self.send_bad_request(connection, str(error))
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            LOG.debug("client %s disconnected: %r", connection.peer, error)
        except asyncio.CancelledError:
            # stop() cancels this task. Ending without the exception keeps
            # asyncio's stream callback in Python 3.11 from logging it as an error.
            pass
        finally:
            connection.close()
            self.connection_tasks.discard(task)

    async def send_bad_request(self, connection: ClientConnection, message: str) -> None:
        body = f"fault_proxy: invalid request: {message}\n".encode("utf-8", "replace")
        head = (
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            await connection.send(head.encode("latin-1") + body)
        except ConnectionError:
            pass

    async def serve_next_request(self, connection: ClientConnection) -> bool:
        """Read, respond to and log one request. Returns whether the client
        connection stays open for another request."""
        request = await read_request_head(connection.reader)
        if request is None:
            return False
        if request.path.startswith(CONTROL_PREFIX):
            return await self.serve_control(connection, request)

        # The fault is drawn as soon as the head arrives, so the order of
        # draws is the order in which request heads arrive.
        started = time.monotonic()
        self.stats.requests[request.method] += 1
        self.stats.bytes_from_client += len(request.head)
        fault = self.picker.draw(request, self.settings)
        if fault is not None:
            self.stats.faults[fault] += 1

        if fault == "reset-before":
            connection.reset()
            self.log_request(request, f"fault={fault}", started)
            return False

        await self.receive_body(connection, request)

        if fault == "reset-after":
            await self.forward(connection, request)
            connection.reset()
            self.log_request(request, f"fault={fault}", started)
            return False

        if fault == "stall":
            await connection.close_after(self.settings.stall_seconds)
            self.log_request(request, f"fault={fault}", started)
            return False

        if fault is not None:
            reply = self.build_fault_reply(fault, request)
        else:
            reply = await self.forward(connection, request)
        await self.send(connection, reply.data)
        self.log_request(request, reply.outcome, started)
        return reply.keep_alive

    async def receive_body(self, connection: ClientConnection, request: Request) -> None:
        """Read the request body, first sending 100 Continue when the client
        waits for one. The proxy sends it itself, so the client never waits
        for the upstream's interim response."""
        if request.expects_continue:
            await self.send(connection, b"HTTP/1.1 100 Continue\r\n\r\n")
        request.body = await read_request_body(connection.reader, request)
        self.stats.bytes_from_client += len(request.body)

    async def send(self, connection: ClientConnection, data: bytes) -> None:
        self.stats.bytes_to_client += len(data)
        await connection.send(data)

    def build_fault_reply(self, fault: str, request: Request) -> Reply:
        status, code, extra_headers = ERROR_FAULTS[fault]
        data = build_s3_error(
            status, code, ERROR_MESSAGES[code], request, self.next_request_id(), extra_headers
        )
        return Reply(data, f"fault={fault}", request.keep_alive)

    async def forward(self, connection: ClientConnection, request: Request) -> Reply:
        """Send the request to the upstream, or respond as R2 would in --r2 mode."""
        r2_enabled = self.settings.r2
        if r2_enabled:
            rejection = self.r2.check_request(request)
            if rejection is not None:
                return self.build_r2_reply(rejection, request)

        try:
            response = await connection.upstream.exchange(request)
        except (OSError, TimeoutError, UpstreamClosed, ProtocolError,
                asyncio.IncompleteReadError) as error:
            host, port = self.upstream_address
            message = f"request to the upstream {host}:{port} failed: {error!r}"
            LOG.error("%s %s: %s", request.method, request.path, message)
            data = build_s3_error(502, "BadGateway", message, request, self.next_request_id())
            return Reply(data, "502", request.keep_alive)

        if r2_enabled:
            replacement = self.r2.review_response(request, response.status)
            if replacement is not None:
                return self.build_r2_reply(replacement, request)

        keep_alive = request.keep_alive and response.keep_alive
        return Reply(response.head + response.body, str(response.status), keep_alive)

    def build_r2_reply(self, error: tuple[int, str, str], request: Request) -> Reply:
        status, code, message = error
        self.stats.r2[str(status)] += 1
        data = build_s3_error(status, code, message, request, self.next_request_id())
        return Reply(data, f"r2={status}", request.keep_alive)

    def next_request_id(self) -> str:
        return f"fault-proxy-{next(self.request_ids):08d}"

    def log_request(self, request: Request, outcome: str, started: float) -> None:
        if self.request_log is None:
            return
        latency_ms = (time.monotonic() - started) * 1000
        target = redact_target(request.target)
        self.request_log.write(f"{request.method} {target} {outcome} {latency_ms:.1f}ms\n")

    # ---- Control endpoints ----

    async def serve_control(self, connection: ClientConnection, request: Request) -> bool:
        if request.expects_continue:
            await connection.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.body = await read_request_body(connection.reader, request)

        status, value = self.handle_control(request)
        await connection.send(build_json_response(status, value, request))
        return request.keep_alive

    def handle_control(self, request: Request) -> tuple[int, object]:
        """Return the status and JSON value of the response to a control request."""
        routes = {
            ("GET", "/__proxy/stats"): lambda: self.stats.to_json(),
            ("GET", "/__proxy/config"): lambda: self.settings.to_json(),
            ("POST", "/__proxy/config"): lambda: self.change_settings(request),
            ("POST", "/__proxy/reset"): lambda: self.reset_stats(),
        }
        route = routes.get((request.method, request.path))
        if route is None:
            known_paths = {path for _, path in routes}
            if request.path in known_paths:
                return 405, {"error": f"method {request.method} not allowed on {request.path}"}
            return 404, {"error": f"unknown control endpoint {request.path}",
                         "endpoints": sorted(known_paths)}

        try:
            return 200, route()
        except ValueError as error:
            return 400, {"error": str(error)}

    def change_settings(self, request: Request) -> dict:
        """Apply the settings in the request's JSON body, all or none of them."""
        if transfer_codings(request):
            raise ValueError("send the JSON body with Content-Length, not chunked")
        try:
            changes = json.loads(request.body or b"{}")
        except json.JSONDecodeError as error:
            raise ValueError(f"invalid JSON body: {error}") from None
        if not isinstance(changes, dict):
            raise ValueError("invalid JSON body: expected an object")

        parsers = {
            "rate": parse_rate,
            "seed": parse_seed,
            "faults": parse_faults,
            "r2": parse_flag,
            "stall_seconds": parse_stall_seconds,
            "match": parse_match,
        }
        unknown = sorted(set(changes) - set(parsers))
        if unknown:
            raise ValueError(f"unknown settings {unknown}: expected some of {sorted(parsers)}")

        parsed = {name: parsers[name](value) for name, value in changes.items()}
        self.settings = dataclasses.replace(self.settings, **parsed)
        if "seed" in parsed:
            self.picker.reseed(self.settings.seed)
        LOG.info("settings changed: %s", json.dumps(self.settings.to_json(), sort_keys=True))
        return self.settings.to_json()

    def reset_stats(self) -> dict:
        self.stats.reset()
        return self.stats.to_json()


def parse_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"invalid r2 {value!r}: expected true or false")
    return value


def redact_target(target: str) -> str:
    """Replace the values of presigned-URL credentials in a request target."""
    path, separator, query = target.partition("?")
    if not separator:
        return target
    fields = []
    for field in query.split("&"):
        name, equals, _ = field.partition("=")
        if equals and urllib.parse.unquote(name).lower() in SECRET_QUERY_FIELDS:
            field = f"{name}=REDACTED"
        fields.append(field)
    return f"{path}?{'&'.join(fields)}"


# ---- Command line ----


def parse_upstream(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(
            f"invalid upstream {url!r}: expected http://HOST:PORT with no path"
        )
    return parts.hostname, parts.port or 80


def parse_listen(value: str) -> tuple[str, int]:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not is_decimal(port) or int(port) > 65535:
        raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT, such as 127.0.0.1:0")
    return host, int(port)


def argument_type(parse):
    """Wrap a parser so that argparse reports its ValueError message."""

    def parse_argument(value: str):
        try:
            return parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse_argument


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Forward HTTP requests to a local S3 server and inject faults.",
    )
    parser.add_argument("--upstream", type=argument_type(parse_upstream),
                        help="URL of the S3 server, such as http://127.0.0.1:9000")
    parser.add_argument("--listen", type=argument_type(parse_listen),
                        default=("127.0.0.1", 0),
                        help="HOST:PORT to listen on, where port 0 picks a free port "
                             "(default: 127.0.0.1:0)")
    parser.add_argument("--port-file", help="file that receives the bound port once listening")

    parser.add_argument("--rate", type=argument_type(parse_rate), default=0.0,
                        help="probability from 0 to 1 that a request gets a fault (default: 0)")
    parser.add_argument("--seed", type=argument_type(parse_seed), default=1,
                        help="seed of the fault generator (default: 1)")
    parser.add_argument("--faults", type=argument_type(parse_faults), default=FAULT_KINDS,
                        help="comma-separated fault kinds to draw from (default: all of "
                             f"{','.join(FAULT_KINDS)})")
    parser.add_argument("--stall-seconds", type=argument_type(parse_stall_seconds),
                        default=30.0,
                        help="seconds a stalled connection stays open (default: 30)")
    parser.add_argument("--match", type=argument_type(parse_match), default="",
                        help="regular expression on 'METHOD target'; only matching requests "
                             "get faults (default: all requests)")
    parser.add_argument("--r2", action="store_true",
                        help="emulate Cloudflare R2: 429 on a second write to a key within "
                             "1 s, 501 for tagging, 412 for If-Match on a missing key")

    parser.add_argument("--stats-file", help="file that receives the counters as JSON on "
                                             "SIGTERM or SIGINT")
    parser.add_argument("--log", help="file that receives one line per request: method, "
                                      "target, status or fault, latency")

    parser.add_argument("--self-test", action="store_true",
                        help="run the built-in test suite and exit")
    return parser


def write_file_atomically(path: str, text: str) -> None:
    """Write the file through a temporary file and a rename, so that a reader
    never sees it half written."""
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


async def run_proxy(args: argparse.Namespace) -> None:
    settings = Settings(
        rate=args.rate,
        seed=args.seed,
        faults=args.faults,
        r2=args.r2,
        stall_seconds=args.stall_seconds,
        match=args.match,
    )
    request_log = open(args.log, "a", encoding="utf-8", buffering=1) if args.log else None
    proxy = FaultProxy(args.upstream, settings, request_log)

    host, port = args.listen
    port = await proxy.start(host, port)
    if args.port_file:
        write_file_atomically(args.port_file, f"{port}\n")
    upstream_host, upstream_port = args.upstream
    LOG.info("listening on %s:%d, forwarding to %s:%d, settings %s", host, port,
             upstream_host, upstream_port, json.dumps(settings.to_json(), sort_keys=True))

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop_requested.set)
    await stop_requested.wait()

    stats = proxy.stats.to_json()
    LOG.info("stopping after %d requests", stats["requests_total"])
    if args.stats_file:
        write_file_atomically(args.stats_file, json.dumps(stats, indent=2) + "\n")
    await proxy.stop()
    if request_log is not None:
        request_log.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fault_proxy %(levelname)s %(message)s")
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        logging.getLogger().setLevel(logging.WARNING)
        return run_self_test()
    if args.upstream is None:
        parser.error("--upstream is required unless --self-test is given")
    asyncio.run(run_proxy(args))
    return 0


# ---- Self-test ----


@dataclasses.dataclass
class ReceivedRequest:
    """A request as the self-test upstream received it."""

    method: str
    path: str
    # Header names in lowercase.
    headers: dict[str, str]
    body: bytes
    client_port: int


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Self-test upstream: records each request and responds with a JSON echo,
    except on a few paths that test other response framings."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def handle_any(self) -> None:
        body = self.read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.received.append(
            ReceivedRequest(self.command, self.path, headers, body, self.client_address[1])
        )

        if self.path == "/chunked-response":
            self.send_chunked_response()
        elif self.path == "/close-delimited":
            self.send_close_delimited_response()
        elif self.command == "PUT" and "if-match" in headers and "/missing" in self.path:
            self.send_body(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        else:
            echo = {"method": self.command, "path": self.path,
                    "host": headers.get("host"), "body_length": len(body)}
            self.send_body(200, json.dumps(echo).encode("utf-8"), "application/json")

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = handle_any

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self.read_raw_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def read_raw_chunked_body(self) -> bytes:
        parts = []
        while True:
            size_line = self.rfile.readline()
            parts.append(size_line)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            parts.append(self.rfile.read(size + 2))
        while True:
            line = self.rfile.readline()
            parts.append(line)
            if line == b"\r\n":
                return b"".join(parts)

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_chunked_response(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")

    def send_close_delimited_response(self) -> None:
        # Neither Content-Length nor chunked: the body ends where the connection does.
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"until the connection closes")
        self.close_connection = True


class EchoServer(http.server.ThreadingHTTPServer):
    # socketserver's default listen backlog of 5 makes the kernel reset
    # connections when test_concurrent_connections opens 64 at once.
    request_queue_size = 128


class TestUpstream:
    """EchoHandler served on 127.0.0.1 from a background thread."""

    def __init__(self) -> None:
        self.server = EchoServer(("127.0.0.1", 0), EchoHandler)
        self.server.received = []
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.server.received

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ProxyThread:
    """A FaultProxy on its own event loop in a background thread."""

    def __init__(self, upstream_port: int, settings: Settings | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = FaultProxy(("127.0.0.1", upstream_port), settings or Settings())
        self.port = self.run(self.proxy.start("127.0.0.1", 0))

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def stop(self) -> None:
        self.run(self.proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def find_closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on, at least right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProxyTestCase(unittest.TestCase):
    """Base for tests against one upstream and one proxy per class. Each test
    starts with the default settings and zero counters."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = TestUpstream()
        cls.proxy = ProxyThread(cls.upstream.port)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        cls.upstream.stop()

    def setUp(self) -> None:
        self.configure(rate=0, seed=1, faults=list(FAULT_KINDS), r2=False, stall_seconds=30)
        self.control("POST", "/__proxy/reset")
        self.upstream.received.clear()

    def connect(self, timeout: float = 5) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, connection=None):
        """Send one request and return the response and its body."""
        client = connection or self.connect()
        try:
            client.request(method, path, body=body, headers=headers or {})
            response = client.getresponse()
            return response, response.read()
        finally:
            if connection is None:
                client.close()

    def control(self, method: str, path: str, value=None) -> tuple[int, object]:
        body = None if value is None else json.dumps(value)
        response, data = self.request(method, path, body=body)
        return response.status, json.loads(data)

    def configure(self, **changes) -> dict:
        status, settings = self.control("POST", "/__proxy/config", changes)
        self.assertEqual(status, 200, settings)
        return settings

    def stats(self) -> dict:
        return self.control("GET", "/__proxy/stats")[1]

    def open_socket(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)


class ForwardingTests(ProxyTestCase):
    def test_host_header_kept(self) -> None:
        response, data = self.request("GET", "/bucket/key", headers={"Host": "r2sync-test.localhost:9000"})
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(data)["host"], "r2sync-test.localhost:9000")
        self.assertEqual(self.upstream.received[0].headers["host"], "r2sync-test.localhost:9000")

    def test_content_length_body_forwarded(self) -> None:
        body = bytes(range(256)) * 1000
        response, data = self.request("PUT", "/bucket/blob", body=body)
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(data)["body_length"], len(body))
        self.assertEqual(self.upstream.received[0].body, body)

    def test_chunked_request_body_byte_for_byte(self) -> None:
        body = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n"
        head = (b"PUT /bucket/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        with self.open_socket() as sock:
            sock.sendall(head + body)
            response = http.client.HTTPResponse(sock)
            response.begin()
            response.read()
        self.assertEqual(response.status, 200)
        self.assertEqual(self.upstream.received[0].body, body)
        self.assertEqual(self.upstream.received[0].headers["transfer-encoding"], "chunked")

    def test_head_response_without_body(self) -> None:
        connection = self.connect()
        try:
            head_response, head_data = self.request("HEAD", "/bucket/key", connection=connection)
            get_response, get_data = self.request("GET", "/bucket/key", connection=connection)
        finally:
            connection.close()
        self.assertEqual(head_response.status, 200)
        self.assertEqual(head_data, b"")
        self.assertGreater(int(head_response.getheader("Content-Length")), 0)
        self.assertEqual(get_response.status, 200)
        self.assertEqual(json.loads(get_data)["method"], "GET")

    def test_keep_alive_reuses_connections(self) -> None:
        connection = self.connect()
        try:
            self.request("GET", "/bucket/one", connection=connection)
            first_socket = connection.sock
            self.request("PUT", "/bucket/two", body=b"x", connection=connection)
            self.request("GET", "/bucket/three", connection=connection)
            self.assertIs(connection.sock, first_socket)
        finally:
            connection.close()
        client_ports = {received.client_port for received in self.upstream.received}
        self.assertEqual(len(self.upstream.received), 3)
        self.assertEqual(len(client_ports), 1)

    def test_chunked_response_forwarded(self) -> None:
        connection = self.connect()
        try:
            response, data = self.request("GET", "/chunked-response", connection=connection)
            after, _ = self.request("GET", "/bucket/after", connection=connection)
        finally:
            connection.close()
        self.assertEqual(response.getheader("Transfer-Encoding"), "chunked")
        self.assertEqual(data, b"hello world")
        self.assertEqual(after.status, 200)

    def test_close_delimited_response_forwarded(self) -> None:
        response, data = self.request("GET", "/close-delimited")
        self.assertEqual(response.status, 200)
        self.assertEqual(data, b"until the connection closes")
        self.assertEqual(self.request("GET", "/bucket/next")[0].status, 200)

    def test_expect_continue_answered_once(self) -> None:
        body = b"expected body"
        head = (b"PUT /bucket/expect HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        with self.open_socket() as sock:
            sock.sendall(head)
            interim = b""
            while not interim.endswith(b"\r\n\r\n"):
                interim += sock.recv(1)
            sock.sendall(body)
            response = http.client.HTTPResponse(sock)
            response.begin()
            data = response.read()
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(data)["body_length"], len(body))
        self.assertEqual(self.upstream.received[0].headers["expect"], "100-continue")

    def test_concurrent_connections(self) -> None:
        def put_and_get(index: int) -> tuple[int, int]:
            connection = self.connect()
            try:
                put, _ = self.request("PUT", f"/bucket/many{index}", body=b"x" * index,
                                      connection=connection)
                get, _ = self.request("GET", f"/bucket/many{index}", connection=connection)
                return put.status, get.status
            finally:
                connection.close()

        with concurrent.futures.ThreadPoolExecutor(max_workers=64) as executor:
            results = list(executor.map(put_and_get, range(256)))
        self.assertEqual(set(results), {(200, 200)})
        self.assertEqual(self.stats()["requests"], {"GET": 256, "PUT": 256})

    def test_invalid_request_gets_400(self) -> None:
        with self.open_socket() as sock:
            with self.assertLogs(LOG, "WARNING"):
                sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
                response = http.client.HTTPResponse(sock)
                response.begin()
                data = response.read()
        self.assertEqual(response.status, 400)
        self.assertIn(b"invalid request line", data)
        self.assertEqual(self.upstream.received, [])

    def test_unreachable_upstream_gives_502(self) -> None:
        proxy = ProxyThread(find_closed_port())
        try:
            client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            with self.assertLogs(LOG, "ERROR"):
                client.request("GET", "/bucket/key")
                response = client.getresponse()
                data = response.read()
            client.close()
        finally:
            proxy.stop()
        self.assertEqual(response.status, 502)
        self.assertIn(b"<Code>BadGateway</Code>", data)


class FaultTests(ProxyTestCase):
    def test_error_faults_not_forwarded(self) -> None:
        cases = [
            ("500", 500, "InternalError", None),
            ("503", 503, "ServiceUnavailable", None),
            ("429", 429, "SlowDown", None),
            ("429-retry-after", 429, "SlowDown", "1"),
        ]
        for kind, status, code, retry_after in cases:
            with self.subTest(kind=kind):
                self.configure(rate=1, faults=[kind])
                connection = self.connect()
                try:
                    response, data = self.request("PUT", "/bucket/key", body=b"abc",
                                                  connection=connection)
                    self.assertEqual(response.status, status)
                    self.assertIn(f"<Code>{code}</Code>".encode(), data)
                    self.assertEqual(response.getheader("Retry-After"), retry_after)

                    # The connection stays usable after an error response.
                    self.configure(rate=0)
                    again, _ = self.request("GET", "/bucket/key", connection=connection)
                    self.assertEqual(again.status, 200)
                finally:
                    connection.close()
                self.assertEqual([r.method for r in self.upstream.received], ["GET"])
                self.assertEqual(self.stats()["faults"][kind], 1)
                self.upstream.received.clear()
                self.control("POST", "/__proxy/reset")

    def test_error_fault_on_head_has_no_body(self) -> None:
        self.configure(rate=1, faults=["503"])
        response, data = self.request("HEAD", "/bucket/key")
        self.assertEqual(response.status, 503)
        self.assertEqual(data, b"")

    def test_reset_before_skips_upstream(self) -> None:
        self.configure(rate=1, faults=["reset-before"])
        with self.assertRaises(ConnectionResetError) as caught:
            self.request("PUT", "/bucket/key", body=b"abc")
        self.assertNotIsInstance(caught.exception, http.client.RemoteDisconnected)
        self.assertEqual(self.upstream.received, [])
        self.assertEqual(self.stats()["faults"]["reset-before"], 1)

    def test_reset_after_reaches_upstream(self) -> None:
        self.configure(rate=1, faults=["reset-after"])
        with self.assertRaises(ConnectionResetError) as caught:
            self.request("PUT", "/bucket/key", body=b"abc")
        self.assertNotIsInstance(caught.exception, http.client.RemoteDisconnected)
        self.assertEqual(len(self.upstream.received), 1)
        self.assertEqual(self.upstream.received[0].body, b"abc")
        self.assertEqual(self.stats()["faults"]["reset-after"], 1)

    def test_stall_closes_after_stall_seconds(self) -> None:
        self.configure(rate=1, faults=["stall"], stall_seconds=0.3)
        started = time.monotonic()
        with self.assertRaises(http.client.RemoteDisconnected):
            self.request("GET", "/bucket/key")
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.3)
        self.assertLess(elapsed, 3)
        self.assertEqual(self.upstream.received, [])

    def test_200_error_for_copy_and_complete(self) -> None:
        self.configure(rate=1, faults=["200-error"])
        requests = [
            ("PUT", "/bucket/copy", {"x-amz-copy-source": "/bucket/source"}),
            ("POST", "/bucket/big?uploadId=abc", {}),
        ]
        for method, path, headers in requests:
            with self.subTest(method=method):
                response, data = self.request(method, path, body=b"<x/>", headers=headers)
                self.assertEqual(response.status, 200)
                self.assertIn(b"<Error><Code>InternalError</Code>", data)
        self.assertEqual(self.upstream.received, [])
        self.assertEqual(self.stats()["faults"]["200-error"], 2)

    def test_200_error_alone_skips_other_requests(self) -> None:
        self.configure(rate=1, faults=["200-error"])
        response, data = self.request("PUT", "/bucket/plain", body=b"abc")
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(data)["method"], "PUT")
        self.assertEqual(self.stats()["faults"]["200-error"], 0)

    def test_200_error_replaced_for_other_requests(self) -> None:
        self.configure(rate=1, faults=["200-error", "503"])
        for _ in range(5):
            response, _ = self.request("GET", "/bucket/key")
            self.assertEqual(response.status, 503)
        self.assertEqual(self.stats()["faults"]["503"], 5)


class DeterminismTests(ProxyTestCase):
    def run_sequence(self, seed: int) -> list[int]:
        self.configure(rate=0.5, seed=seed, faults=["500", "503", "429"])
        return [self.request("GET", f"/bucket/key{i}")[0].status for i in range(40)]

    def test_same_seed_same_faults(self) -> None:
        first = self.run_sequence(seed=7)
        second = self.run_sequence(seed=7)
        self.assertEqual(first, second)
        self.assertIn(200, first)
        self.assertTrue(set(first) - {200}, "rate 0.5 produced no fault in 40 requests")

    def test_other_seed_other_faults(self) -> None:
        self.assertNotEqual(self.run_sequence(seed=7), self.run_sequence(seed=8))

    def test_rate_zero_never_faults(self) -> None:
        statuses = {self.request("GET", f"/bucket/key{i}")[0].status for i in range(20)}
        self.assertEqual(statuses, {200})

    def test_match_limits_faults(self) -> None:
        self.configure(rate=1, faults=["500"], match=r"^PUT .*partNumber=")
        part, _ = self.request("PUT", "/bucket/key?partNumber=1&uploadId=u", body=b"abc")
        plain, _ = self.request("PUT", "/bucket/key", body=b"abc")
        self.configure(rate=0, match="")
        self.assertEqual(part.status, 500)
        self.assertEqual(plain.status, 200)


class R2Tests(ProxyTestCase):
    def test_second_write_within_second_gets_429(self) -> None:
        self.configure(r2=True)
        self.assertEqual(self.request("PUT", "/bucket/rate", body=b"1")[0].status, 200)

        response, data = self.request("PUT", "/bucket/rate", body=b"2")
        self.assertEqual(response.status, 429)
        self.assertIn(b"<Code>SlowDown</Code>", data)

        complete, _ = self.request("POST", "/bucket/rate?uploadId=u1", body=b"<x/>")
        self.assertEqual(complete.status, 429)

        # UploadPart, reads and other keys are not limited.
        for _ in range(2):
            part, _ = self.request("PUT", "/bucket/rate?partNumber=1&uploadId=u1", body=b"p")
            self.assertEqual(part.status, 200)
        self.assertEqual(self.request("GET", "/bucket/rate")[0].status, 200)
        self.assertEqual(self.request("PUT", "/bucket/other", body=b"1")[0].status, 200)

        time.sleep(R2_WRITE_INTERVAL_SECONDS + 0.1)
        self.assertEqual(self.request("PUT", "/bucket/rate", body=b"3")[0].status, 200)
        self.assertEqual(self.stats()["r2"]["429"], 2)

    def test_tagging_header_gets_501(self) -> None:
        self.configure(r2=True)
        response, data = self.request("PUT", "/bucket/tagged", body=b"1",
                                      headers={"x-amz-tagging": "a=b"})
        self.assertEqual(response.status, 501)
        self.assertIn(b"<Code>NotImplemented</Code>", data)
        self.assertEqual(self.upstream.received, [])

    def test_tagging_query_gets_501(self) -> None:
        self.configure(r2=True)
        response, _ = self.request("GET", "/bucket/tagged?tagging")
        self.assertEqual(response.status, 501)
        self.assertEqual(self.stats()["r2"]["501"], 1)

    def test_if_match_on_missing_key_gets_412(self) -> None:
        self.configure(r2=True)
        response, data = self.request("PUT", "/bucket/missing", body=b"1",
                                      headers={"If-Match": '"abc"'})
        self.assertEqual(response.status, 412)
        self.assertIn(b"<Code>PreconditionFailed</Code>", data)
        self.assertEqual(len(self.upstream.received), 1)
        self.assertEqual(self.stats()["r2"]["412"], 1)

    def test_without_r2_upstream_responses_kept(self) -> None:
        missing, _ = self.request("PUT", "/bucket/missing", body=b"1", headers={"If-Match": '"abc"'})
        tagged, _ = self.request("PUT", "/bucket/tagged", body=b"1", headers={"x-amz-tagging": "a=b"})
        again, _ = self.request("PUT", "/bucket/tagged", body=b"2")
        self.assertEqual(missing.status, 404)
        self.assertEqual(tagged.status, 200)
        self.assertEqual(again.status, 200)


class ControlTests(ProxyTestCase):
    def test_stats_count_requests_and_bytes(self) -> None:
        self.configure(rate=1, faults=["503"])
        self.request("PUT", "/bucket/key", body=b"12345")
        self.configure(rate=0)
        self.request("GET", "/bucket/key")
        self.request("GET", "/bucket/key")

        stats = self.stats()
        self.assertEqual(stats["requests"], {"GET": 2, "PUT": 1})
        self.assertEqual(stats["requests_total"], 3)
        self.assertEqual(stats["faults"]["503"], 1)
        self.assertGreater(stats["bytes_from_client"], 5)
        self.assertGreater(stats["bytes_to_client"], 0)
        self.assertEqual(stats["r2"], {"429": 0, "501": 0, "412": 0})

    def test_control_requests_not_counted(self) -> None:
        self.configure(rate=1, faults=["reset-before"])
        for _ in range(3):
            self.assertEqual(self.control("GET", "/__proxy/stats")[0], 200)
        self.assertEqual(self.stats()["requests_total"], 0)
        self.assertEqual(self.stats()["bytes_from_client"], 0)

    def test_reset_zeroes_stats(self) -> None:
        self.request("GET", "/bucket/key")
        status, stats = self.control("POST", "/__proxy/reset")
        self.assertEqual(status, 200)
        self.assertEqual(stats["requests_total"], 0)
        self.assertEqual(self.stats()["bytes_to_client"], 0)

    def test_config_changes_settings(self) -> None:
        settings = self.configure(rate=0.25, seed=9, faults="500,stall", r2=True, stall_seconds=2)
        self.assertEqual(settings, {"rate": 0.25, "seed": 9, "faults": ["500", "stall"],
                                    "r2": True, "stall_seconds": 2.0, "match": ""})
        self.assertEqual(self.control("GET", "/__proxy/config")[1], settings)

    def test_config_rejects_invalid_values(self) -> None:
        before = self.control("GET", "/__proxy/config")[1]
        invalid = [
            {"rate": 2},
            {"rate": "often"},
            {"faults": ["nope"]},
            {"faults": []},
            {"seed": 1.5},
            {"r2": "yes"},
            {"stall_seconds": -1},
            {"stall_seconds": "nan"},
            {"rate": 0.5, "color": "red"},
            ["rate", 1],
        ]
        for value in invalid:
            with self.subTest(value=value):
                status, body = self.control("POST", "/__proxy/config", value)
                self.assertEqual(status, 400)
                self.assertIn("error", body)
        self.assertEqual(self.control("GET", "/__proxy/config")[1], before)

    def test_unknown_control_path_gets_404(self) -> None:
        self.assertEqual(self.control("GET", "/__proxy/nothing")[0], 404)
        self.assertEqual(self.control("DELETE", "/__proxy/stats")[0], 405)


class CommandLineTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = TestUpstream()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.upstream.stop()

    def test_port_stats_and_log_files(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            port_file = os.path.join(directory, "port")
            stats_file = os.path.join(directory, "stats.json")
            log_file = os.path.join(directory, "requests.log")
            command = [
                sys.executable, os.path.abspath(__file__),
                "--upstream", f"http://127.0.0.1:{self.upstream.port}",
                "--port-file", port_file, "--stats-file", stats_file, "--log", log_file,
                "--rate", "1", "--faults", "503",
            ]
            process = subprocess.Popen(command, stderr=subprocess.PIPE)
            try:
                port = self.wait_for_port(port_file, process)
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                statuses = [self.get_status(client, "/bucket/presigned?X-Amz-Signature=secret")]
                client.request("POST", "/__proxy/config", body='{"rate": 0}')
                client.getresponse().read()
                statuses.append(self.get_status(client, "/bucket/key"))
                client.close()
            finally:
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=10)

            self.assertEqual(process.returncode, 0, stderr.decode())
            self.assertEqual(statuses, [503, 200])
            with open(stats_file, encoding="utf-8") as file:
                stats = json.load(file)
            self.assertEqual(stats["requests"], {"GET": 2})
            self.assertEqual(stats["faults"]["503"], 1)

            with open(log_file, encoding="utf-8") as file:
                lines = [line.split() for line in file]
            self.assertEqual(len(lines), 2)
            self.assertEqual(lines[0][:3],
                             ["GET", "/bucket/presigned?X-Amz-Signature=REDACTED", "fault=503"])
            self.assertEqual(lines[1][:3], ["GET", "/bucket/key", "200"])
            self.assertRegex(lines[1][3], r"^\d+\.\dms$")

    def wait_for_port(self, port_file: str, process: subprocess.Popen) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(port_file):
                with open(port_file, encoding="utf-8") as file:
                    return int(file.read())
            if process.poll() is not None:
                self.fail(f"proxy exited with {process.returncode}: {process.stderr.read().decode()}")
            time.sleep(0.05)
        self.fail(f"proxy wrote no port to {port_file} within 10 s")

    @staticmethod
    def get_status(client: http.client.HTTPConnection, path: str) -> int:
        client.request("GET", path)
        response = client.getresponse()
        response.read()
        return response.status


SELF_TEST_CASES = (
    ForwardingTests,
    FaultTests,
    DeterminismTests,
    R2Tests,
    ControlTests,
    CommandLineTests,
)


def run_self_test() -> int:
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in SELF_TEST_CASES)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
