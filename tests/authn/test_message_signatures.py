"""RFC 9421's own HMAC example (appendix B.2.5) through authn/hmacauth.py's signature base: the
base is built exactly as the RFC prints it and the MAC equals the RFC's."""
from __future__ import annotations

import base64
import hashlib
import hmac

from http_sfv.dictionary import Dictionary

from authn.hmacauth import MessageSignatures

SECRET = base64.b64decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")


class Request:
    method = "POST"
    target = b"/foo?param=Value&Pet=dog"
    scheme = "https"
    query = b"param=Value&Pet=dog"
    headers = [(b"host", b"example.com"), (b"date", b"Tue, 20 Apr 2021 02:07:55 GMT"),
               (b"content-type", b"application/json"), (b"content-length", b"18")]


def test_the_rfc_9421_hmac_example_verifies() -> None:
    inputs = Dictionary()
    inputs.parse(b'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"')
    base = MessageSignatures({}).signature_base(inputs["sig-b25"], Request())  # type: ignore[arg-type]
    assert base == (b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@authority": example.com\n'
                    b'"content-type": application/json\n"@signature-params": ("date" "@authority" "content-type")'
                    b';created=1618884473;keyid="test-shared-secret"')
    mac = base64.b64encode(hmac.new(SECRET, base, hashlib.sha256).digest())
    assert mac == b"pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="
