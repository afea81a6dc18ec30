"""HMAC request signatures in the format of APISIX 3.11+ (and Higress's hmac-auth-apisix), stricter.

``Authorization: Signature keyId="...",algorithm="hmac-sha256",headers="@request-target date",
signature="BASE64"``. The signing string is the key id, then one line per listed header in the
listed order: ``@request-target`` as ``METHOD TARGET`` (the raw request target, query included),
any other as ``name: value``; every line ends with ``\\n``.

Where APISIX is lenient, this is not: headers listed as signed must be present (APISIX signs an
absent one as empty), ``@request-target`` and ``date`` must be signed (else method, URI and time can
be changed freely), a ``Date`` outside the clock skew is refused, the ``Digest`` header must be
signed when the body is validated, and a signature seen within the skew window is a replay.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_to_bytes

from http_sfv.dictionary import Dictionary
from http_sfv.item import InnerList

from authn.consumers import Consumer, Identity
from authn.request import INVALID, AuthRequest, Result, header_values

ALGORITHMS = {"hmac-sha256": hashlib.sha256, "hmac-sha512": hashlib.sha512}
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*(?:,|$)')

# remember(signature digest, seconds) -> True when it was not seen before (the request may pass)
Remember = Callable[[str, float], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class HmacCredential:
    consumer: Consumer
    key_id: str
    secret: bytes


class SignedRequest(AuthRequest, Protocol):
    method: str
    target: bytes  # the raw request target: path and query
    scheme: str


def parse_authorization(value: bytes) -> dict[str, str] | None:
    text = value.decode("latin-1").strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "signature":
        return None
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        found = _PARAM.match(rest, position)
        if found is None:
            return {}
        if found.group(1) in params:
            return {}  # a parameter given twice: which one counts would be a guess
        params[found.group(1)] = found.group(2)
        position = found.end()
    return params


def body_digest(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


class HmacAuth:
    challenge = b'Signature realm="edgeward",headers="@request-target date"'

    def __init__(self, credentials: dict[str, HmacCredential], clock_skew: float = 300.0,
                 signed_headers: Sequence[str] = (), validate_body: bool = False,
                 algorithms: Sequence[str] = ("hmac-sha256", "hmac-sha512"), remember: Remember | None = None) -> None:
        self.credentials = credentials
        self.clock_skew = clock_skew
        required = ["@request-target", "date", *(h.lower() for h in signed_headers)]
        if validate_body:
            required.append("digest")
        self.required = frozenset(required)
        self.validate_body = validate_body
        self.algorithms = frozenset(algorithms)
        self.remember = remember

    def signing_string(self, key_id: str, headers: Sequence[str], request: SignedRequest) -> bytes | None:
        """None when a listed header is absent or repeated (never signed as empty)."""
        lines = [key_id.encode()]
        for name in headers:
            if name == "@request-target":
                lines.append(request.method.upper().encode() + b" " + request.target)
                continue
            values = header_values(request, name.encode())
            if len(values) != 1:
                return None
            lines.append(name.encode() + b": " + values[0].strip())
        return b"\n".join(lines) + b"\n"

    async def authenticate(self, request: SignedRequest) -> Result:
        values = header_values(request, b"authorization")
        parsed = [p for p in (parse_authorization(v) for v in values) if p is not None]
        if not parsed:
            return None
        params = parsed[0]
        if len(parsed) != 1 or not {"keyId", "algorithm", "headers", "signature"} <= set(params):
            return INVALID
        headers = [h.lower() for h in params["headers"].split()]
        if not self.required <= set(headers) or len(set(headers)) != len(headers):
            return INVALID
        credential = self.credentials.get(params["keyId"])
        algorithm = params["algorithm"].lower()
        if credential is None or algorithm not in self.algorithms or algorithm not in ALGORITHMS:
            return INVALID
        date = header_values(request, b"date")
        try:
            stamp = parsedate_to_datetime(date[0].decode("latin-1")).timestamp() if len(date) == 1 else None
        except (TypeError, ValueError):
            stamp = None
        if stamp is None or abs(time.time() - stamp) > self.clock_skew:
            return INVALID
        signing = self.signing_string(params["keyId"], headers, request)
        if signing is None:
            return INVALID
        try:
            presented = base64.b64decode(params["signature"], validate=True)
        except (binascii.Error, ValueError):
            return INVALID
        expected = hmac.new(credential.secret, signing, ALGORITHMS[algorithm]).digest()
        if not hmac.compare_digest(presented, expected):
            return INVALID
        if self.remember is not None:
            # the same signature again within the window the Date allows is a replay
            if not await self.remember(hashlib.sha256(expected).hexdigest(), 2 * self.clock_skew):
                return INVALID
        return Identity(credential.consumer, "hmac:" + credential.key_id)

    def body_matches(self, request: AuthRequest, body: bytes) -> bool:
        """The signed ``Digest`` header against the body (validate_body)."""
        digests = header_values(request, b"digest")
        return len(digests) == 1 and hmac.compare_digest(digests[0].strip(), body_digest(body).encode())


NEED_BODY = "need-body"  # the signature covers form fields: decided once the body is read

_HIGRESS_ALGORITHMS = {"hmacsha256": hashlib.sha256, "hmacsha512": hashlib.sha512}
_FIXED = frozenset({"accept", "content-md5", "content-type", "date", "x-ca-signature", "x-ca-signature-headers"})


def _one(request: AuthRequest, name: bytes) -> str | None:
    values = header_values(request, name)
    return values[0].decode("latin-1").strip() if len(values) == 1 else None


def _form(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


class HigressHmac:
    """The X-Ca-* scheme of Higress's hmac-auth (the Alibaba Cloud API gateway's string to sign):

    ``METHOD\\nAccept\\nContent-MD5\\nContent-Type\\nDate\\n`` + each signed header as
    ``name:value\\n`` (names from X-Ca-Signature-Headers, sorted) + the path and its parameters
    (query and form fields, sorted by name), signed with X-Ca-Signature-Method (HmacSHA256 or
    HmacSHA512) under the secret of X-Ca-Key; the signature in X-Ca-Signature, base64.

    Stricter than Higress: X-Ca-Timestamp (ms) and X-Ca-Nonce must be signed, the timestamp must
    be within the clock skew, a nonce is used once, a form request is signed with its fields
    (Higress skips the check when such a request has no body), Content-MD5 is checked whenever it
    is sent (and required with a body when the body is validated), and failures are 401.
    """

    challenge = b'Signature realm="edgeward",format="x-ca"'

    def __init__(self, credentials: dict[str, HmacCredential], clock_skew: float = 300.0,
                 signed_headers: Sequence[str] = (), validate_body: bool = False, remember: Remember | None = None) -> None:
        self.credentials = credentials
        self.clock_skew = clock_skew
        self.required = frozenset({"x-ca-timestamp", "x-ca-nonce", *(h.lower() for h in signed_headers)})
        self.validate_body = validate_body
        self.remember = remember

    @staticmethod
    def _parameters(query: bytes, form: bytes | None) -> str:
        pairs: dict[str, list[str]] = {}
        for source in (query, form or b""):
            for item in source.split(b"&"):
                if not item:
                    continue
                name, sep, value = item.partition(b"=")
                key = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
                pairs.setdefault(key, []).append(unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace")
                                                 if sep else "")
        return "&".join(f"{key}={pairs[key][0]}" if pairs[key][0] else key for key in sorted(pairs))

    def _string_to_sign(self, request: SignedRequest, signed: Sequence[str], body: bytes | None) -> bytes | None:
        lines = [request.method.upper()]
        for fixed in (b"accept", b"content-md5", b"content-type", b"date"):
            values = header_values(request, fixed)
            if len(values) > 1:
                return None
            lines.append(values[0].decode("latin-1").strip() if values else "")
        text = "\n".join(lines) + "\n"
        for header in sorted(signed):
            value = _one(request, header.encode())
            if value is None:
                return None  # a header listed as signed is absent (or repeated): never signed as empty
            text += f"{header}:{value}\n"
        path = request.target.split(b"?", 1)[0].decode("utf-8", "replace")
        form = body if _form(_one(request, b"content-type")) else None
        parameters = self._parameters(request.query, form)
        return (text + path + (f"?{parameters}" if parameters else "")).encode()

    async def authenticate(self, request: SignedRequest, body: bytes | None = None) -> Result | str:
        key = _one(request, b"x-ca-key")
        signature = _one(request, b"x-ca-signature")
        if key is None and signature is None and not header_values(request, b"x-ca-key"):
            return None
        if key is None or signature is None:
            return INVALID
        credential = self.credentials.get(key)
        method = (_one(request, b"x-ca-signature-method") or "HmacSHA256").lower()
        listed = [h.strip().lower() for h in (_one(request, b"x-ca-signature-headers") or "").split(",") if h.strip()]
        signed = [h for h in listed if h not in _FIXED]
        if credential is None or method not in _HIGRESS_ALGORITHMS or not self.required <= set(signed):
            return INVALID
        stamp = _one(request, b"x-ca-timestamp")
        if stamp is None or not stamp.isdigit() or abs(time.time() - int(stamp) / 1000) > self.clock_skew:
            return INVALID
        if body is None and _form(_one(request, b"content-type")):
            return NEED_BODY
        text = self._string_to_sign(request, signed, body)
        if text is None:
            return INVALID
        expected = base64.b64encode(hmac.new(credential.secret, text, _HIGRESS_ALGORITHMS[method]).digest()).decode()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return INVALID
        if self.remember is not None:
            nonce = _one(request, b"x-ca-nonce") or ""
            if not await self.remember(hashlib.sha256(f"x-ca\0{key}\0{nonce}".encode()).hexdigest(), 2 * self.clock_skew):
                return INVALID
        return Identity(credential.consumer, "hmac:" + credential.key_id)

    def body_matches(self, request: AuthRequest, body: bytes) -> bool:
        """Content-MD5 whenever it is sent; required for a body when the body is validated."""
        sent = _one(request, b"content-md5")
        if sent is None:
            return not (self.validate_body and body)
        return hmac.compare_digest(sent.encode(), base64.b64encode(hashlib.md5(body).digest()))  # noqa: S324 - the scheme's own


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    function = hashlib.sha256 if algorithm == "sha-256" else hashlib.sha512
    return f"{algorithm}=:{base64.b64encode(function(body).digest()).decode()}:"


class MessageSignatures:
    """HTTP Message Signatures (RFC 9421) with ``hmac-sha256``: ``Signature-Input`` names the
    covered components and the parameters (``created``, ``keyid``, ``alg``, ``nonce``),
    ``Signature`` holds the MAC; the signature base is built as section 2.5 says, and a signed
    ``content-digest`` (RFC 9530, sha-256 or sha-512) is checked against the body.

    Required here: ``@method``; the target (``@target-uri``, ``@request-target``, or ``@path``
    with ``@query`` when there is a query); ``created`` within the clock skew (and ``expires``,
    when given, not past); ``content-digest`` when the body is validated; each signature once.
    """

    challenge = b'Signature realm="edgeward",format="rfc9421"'

    def __init__(self, credentials: dict[str, HmacCredential], clock_skew: float = 300.0,
                 signed_headers: Sequence[str] = (), validate_body: bool = False, remember: Remember | None = None) -> None:
        self.credentials = credentials
        self.clock_skew = clock_skew
        self.required = frozenset(h.lower() for h in signed_headers) | ({"content-digest"} if validate_body else set())
        self.validate_body = validate_body
        self.remember = remember

    @staticmethod
    def _component(name: str, request: SignedRequest, scheme: str) -> str | None:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        host = _one(request, b"host") or ""
        derived = {
            "@method": request.method.upper(),
            "@authority": host.lower(),
            "@scheme": scheme,
            "@target-uri": f"{scheme}://{host.lower()}{target}",
            "@request-target": target,
            "@path": path,
            "@query": "?" + query,
        }
        if name.startswith("@"):
            return derived.get(name)
        values = header_values(request, name.encode())
        if not values:
            return None  # listed as covered but absent: never signed as empty
        return ", ".join(v.decode("latin-1").strip() for v in values)

    async def authenticate(self, request: SignedRequest) -> Result:
        inputs, signatures = header_values(request, b"signature-input"), header_values(request, b"signature")
        if not inputs and not signatures:
            return None
        try:
            parsed_inputs, parsed_signatures = Dictionary(), Dictionary()
            parsed_inputs.parse(b", ".join(inputs))
            parsed_signatures.parse(b", ".join(signatures))
        except ValueError:
            return INVALID
        if len(parsed_inputs) != 1 or set(parsed_inputs.keys()) != set(parsed_signatures.keys()):
            return INVALID  # one signature, and its label in both fields
        label = next(iter(parsed_inputs.keys()))
        covered_list = parsed_inputs[label]
        signature = parsed_signatures[label].value
        params = dict(covered_list.params)
        if not isinstance(signature, bytes) or not isinstance(covered_list, InnerList):
            return INVALID
        covered = [item.value for item in covered_list]
        if not all(isinstance(c, str) for c in covered) or len(set(covered)) != len(covered):
            return INVALID
        target_covered = "@target-uri" in covered or "@request-target" in covered or (
            "@path" in covered and ("@query" in covered or b"?" not in request.target))
        if "@method" not in covered or not target_covered or not self.required <= set(covered):
            return INVALID
        credential = self.credentials.get(str(params.get("keyid", "")))
        if credential is None or params.get("alg", "hmac-sha256") != "hmac-sha256":
            return INVALID
        created, expires = params.get("created"), params.get("expires")
        now = time.time()
        if not isinstance(created, int) or abs(now - created) > self.clock_skew:
            return INVALID
        if expires is not None and (not isinstance(expires, int) or expires < now):
            return INVALID
        base = self.signature_base(covered_list, request)
        if base is None:
            return INVALID
        expected = hmac.new(credential.secret, base, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            return INVALID
        if self.remember is not None and not await self.remember(hashlib.sha256(expected).hexdigest(), 2 * self.clock_skew):
            return INVALID
        return Identity(credential.consumer, "hmac:" + credential.key_id)

    def signature_base(self, covered: InnerList, request: SignedRequest) -> bytes | None:
        """RFC 9421 section 2.5: one line per covered component, then the signature parameters."""
        lines = []
        for item in covered:
            value = self._component(str(item.value), request, request.scheme)
            if value is None:
                return None
            lines.append(f'"{item.value}": {value}')
        lines.append(f'"@signature-params": {covered}')
        return "\n".join(lines).encode()

    def body_matches(self, request: AuthRequest, body: bytes) -> bool:
        """A ``content-digest`` that is sent must match the body; with ``validate_body`` (which
        requires it to be covered) one must be sent."""
        sent = _one(request, b"content-digest")
        if sent is None:
            return not self.validate_body
        for entry in sent.split(","):
            algorithm = entry.strip().split("=", 1)[0].lower()
            if algorithm in ("sha-256", "sha-512"):
                return hmac.compare_digest(entry.strip().encode(), content_digest(body, algorithm).encode())
        return False
