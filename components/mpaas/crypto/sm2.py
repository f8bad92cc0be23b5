"""SM2 (GB/T 32918) signatures and encryption through the system's OpenSSL 3 (libcrypto, via ctypes).

`cryptography` has no SM2 API and pure-Python SM2 verifies ~37/s; OpenSSL's C
implementation verifies ~1.2k/s per core. Signatures are SM2 with SM3 over
the message and the signer's distinguishing id (default "1234567812345678",
GM/T 0009), DER-encoded; ciphertexts are OpenSSL's ASN.1 C1C3C2 form.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from ctypes import POINTER, byref, c_char_p, c_int, c_long, c_size_t, c_void_p
from functools import cache
from typing import Any

DEFAULT_ID = b"1234567812345678"
BIO_CTRL_INFO = 3


class Sm2Error(ValueError):
    pass


@cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
    lib = ctypes.CDLL(name)
    if not hasattr(lib, "EVP_PKEY_Q_keygen"):
        raise Sm2Error(f"{name} is not OpenSSL 3: SM2 needs libcrypto 3.x")
    sigs: dict[str, tuple[object, list[object]]] = {
        "BIO_new_mem_buf": (c_void_p, [c_char_p, c_int]),
        "BIO_new": (c_void_p, [c_void_p]),
        "BIO_s_mem": (c_void_p, []),
        "BIO_ctrl": (c_long, [c_void_p, c_int, c_long, c_void_p]),
        "BIO_free": (c_int, [c_void_p]),
        "PEM_read_bio_PUBKEY": (c_void_p, [c_void_p, c_void_p, c_void_p, c_void_p]),
        "PEM_read_bio_PrivateKey": (c_void_p, [c_void_p, c_void_p, c_void_p, c_void_p]),
        "PEM_write_bio_PUBKEY": (c_int, [c_void_p, c_void_p]),
        "PEM_write_bio_PrivateKey": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_int, c_void_p, c_void_p]),
        "EVP_PKEY_free": (None, [c_void_p]),
        "EVP_PKEY_is_a": (c_int, [c_void_p, c_char_p]),
        "EVP_PKEY_CTX_new": (c_void_p, [c_void_p, c_void_p]),
        "EVP_PKEY_CTX_free": (None, [c_void_p]),
        "EVP_PKEY_CTX_set1_id": (c_int, [c_void_p, c_char_p, c_int]),
        "EVP_MD_CTX_new": (c_void_p, []),
        "EVP_MD_CTX_free": (None, [c_void_p]),
        "EVP_MD_CTX_set_pkey_ctx": (None, [c_void_p, c_void_p]),
        "EVP_sm3": (c_void_p, []),
        "EVP_DigestSignInit": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
        "EVP_DigestSign": (c_int, [c_void_p, c_char_p, POINTER(c_size_t), c_char_p, c_size_t]),
        "EVP_DigestVerifyInit": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
        "EVP_DigestVerify": (c_int, [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t]),
        "EVP_PKEY_encrypt_init": (c_int, [c_void_p]),
        "EVP_PKEY_encrypt": (c_int, [c_void_p, c_char_p, POINTER(c_size_t), c_char_p, c_size_t]),
        "EVP_PKEY_decrypt_init": (c_int, [c_void_p]),
        "EVP_PKEY_decrypt": (c_int, [c_void_p, c_char_p, POINTER(c_size_t), c_char_p, c_size_t]),
        "EVP_PKEY_get_octet_string_param": (c_int, [c_void_p, c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
        "ERR_get_error": (ctypes.c_ulong, []),
        "ERR_error_string_n": (None, [ctypes.c_ulong, c_char_p, c_size_t]),
        "ERR_clear_error": (None, []),
    }
    for fn, (restype, argtypes) in sigs.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = restype, argtypes
    lib.EVP_PKEY_Q_keygen.restype = c_void_p  # variadic: argtypes stay unset
    return lib


def _error(what: str) -> Sm2Error:
    lib = _lib()
    code = lib.ERR_get_error()
    buf = ctypes.create_string_buffer(256)
    if code:
        lib.ERR_error_string_n(code, buf, 256)
    lib.ERR_clear_error()
    return Sm2Error(f"{what}: {buf.value.decode() or 'OpenSSL error'}")


class _Key:
    """An owned EVP_PKEY*."""

    def __init__(self, ptr: int, private: bool):
        self._ptr, self.private = ptr, private

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            _lib().EVP_PKEY_free(self._ptr)
            self._ptr = 0

    def _pem(self, write: str) -> bytes:
        lib = _lib()
        bio = lib.BIO_new(lib.BIO_s_mem())
        try:
            ok = (
                lib.PEM_write_bio_PrivateKey(bio, self._ptr, None, None, 0, None, None)
                if write == "private"
                else lib.PEM_write_bio_PUBKEY(bio, self._ptr)
            )
            if ok != 1:
                raise _error("writing PEM")
            data = c_char_p()
            n = lib.BIO_ctrl(bio, BIO_CTRL_INFO, 0, byref(data))
            return ctypes.string_at(data, n)
        finally:
            lib.BIO_free(bio)


def _load(pem: bytes, private: bool) -> int:
    lib = _lib()
    bio = lib.BIO_new_mem_buf(pem, len(pem))
    try:
        read = lib.PEM_read_bio_PrivateKey if private else lib.PEM_read_bio_PUBKEY
        ptr = read(bio, None, None, None)
    finally:
        lib.BIO_free(bio)
    if not ptr:
        raise _error("not a PEM " + ("private" if private else "public") + " key")
    if lib.EVP_PKEY_is_a(ptr, b"SM2") != 1:
        lib.EVP_PKEY_free(ptr)
        raise Sm2Error("the key is not an SM2 key")
    return int(ptr)


class PublicKey(_Key):
    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        return cls(_load(pem, private=False), private=False)

    def pem(self) -> bytes:
        return self._pem("public")

    def verify(self, signature: bytes, message: bytes, *, uid: bytes = DEFAULT_ID) -> bool:
        lib = _lib()
        mctx, pctx = lib.EVP_MD_CTX_new(), lib.EVP_PKEY_CTX_new(self._ptr, None)
        try:
            if lib.EVP_PKEY_CTX_set1_id(pctx, uid, len(uid)) != 1:
                raise _error("setting the SM2 id")
            lib.EVP_MD_CTX_set_pkey_ctx(mctx, pctx)
            if lib.EVP_DigestVerifyInit(mctx, None, lib.EVP_sm3(), None, self._ptr) != 1:
                raise _error("verify init")
            ok = lib.EVP_DigestVerify(mctx, signature, len(signature), message, len(message)) == 1
            if not ok:
                lib.ERR_clear_error()
            return ok
        finally:
            lib.EVP_MD_CTX_free(mctx)
            lib.EVP_PKEY_CTX_free(pctx)

    def point(self) -> bytes:
        """The public point, uncompressed (04 || x || y)."""
        lib = _lib()
        out, n = ctypes.create_string_buffer(133), c_size_t(0)
        if lib.EVP_PKEY_get_octet_string_param(self._ptr, b"encoded-pub-key", out, 133, byref(n)) != 1:
            raise _error("reading the public point")
        point = out.raw[: n.value]
        if len(point) != 65 or point[0] != 4:
            raise Sm2Error("expected an uncompressed SM2 public point")
        return point

    def encrypt(self, plaintext: bytes) -> bytes:
        lib = _lib()
        return _pkey_crypt(self._ptr, plaintext, lib.EVP_PKEY_encrypt_init, lib.EVP_PKEY_encrypt, "encrypt")


class PrivateKey(_Key):
    @classmethod
    def generate(cls) -> PrivateKey:
        ptr = _lib().EVP_PKEY_Q_keygen(None, None, b"SM2")
        if not ptr:
            raise _error("SM2 key generation")
        return cls(int(ptr), private=True)

    @classmethod
    def from_pem(cls, pem: bytes) -> PrivateKey:
        return cls(_load(pem, private=True), private=True)

    def pem(self) -> bytes:
        return self._pem("private")

    def public_key(self) -> PublicKey:
        return PublicKey.from_pem(self._pem("public"))

    def sign(self, message: bytes, *, uid: bytes = DEFAULT_ID) -> bytes:
        lib = _lib()
        mctx, pctx = lib.EVP_MD_CTX_new(), lib.EVP_PKEY_CTX_new(self._ptr, None)
        try:
            if lib.EVP_PKEY_CTX_set1_id(pctx, uid, len(uid)) != 1:
                raise _error("setting the SM2 id")
            lib.EVP_MD_CTX_set_pkey_ctx(mctx, pctx)
            if lib.EVP_DigestSignInit(mctx, None, lib.EVP_sm3(), None, self._ptr) != 1:
                raise _error("sign init")
            n = c_size_t(0)
            if lib.EVP_DigestSign(mctx, None, byref(n), message, len(message)) != 1:
                raise _error("sign")
            out = ctypes.create_string_buffer(n.value)
            if lib.EVP_DigestSign(mctx, out, byref(n), message, len(message)) != 1:
                raise _error("sign")
            return out.raw[: n.value]
        finally:
            lib.EVP_MD_CTX_free(mctx)
            lib.EVP_PKEY_CTX_free(pctx)

    def decrypt(self, ciphertext: bytes) -> bytes:
        lib = _lib()
        return _pkey_crypt(self._ptr, ciphertext, lib.EVP_PKEY_decrypt_init, lib.EVP_PKEY_decrypt, "decrypt")


def _pkey_crypt(key: int, data: bytes, init: Any, op: Any, what: str) -> bytes:
    """EVP_PKEY_encrypt/decrypt: ask for the output size, then produce the output."""
    lib = _lib()
    pctx = lib.EVP_PKEY_CTX_new(key, None)
    try:
        if init(pctx) != 1:
            raise _error(f"{what} init")
        n = c_size_t(0)
        if op(pctx, None, byref(n), data, len(data)) != 1:
            raise _error(what)
        out = ctypes.create_string_buffer(n.value)
        if op(pctx, out, byref(n), data, len(data)) != 1:
            raise _error(what)
        return out.raw[: n.value]
    finally:
        lib.EVP_PKEY_CTX_free(pctx)
