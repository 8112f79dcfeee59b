"""The Raft wire as Corral runs it: frame encryption and frame encoding.

pysyncobj's connections call `encrypt_at_time`, `extract_timestamp` and
`decrypt` on whatever `SyncObj.encryptor` returns, and compress every frame
with the `zlib` module they imported. Both are replaced here (raftnode.py
plugs them in): every member must run the same build.

Threading: stateless apart from the AES key; safe from any thread.
"""

from __future__ import annotations

import os
import struct
import zlib

import pysyncobj.pickle as sync_pickle
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj import tcp_connection


class AeadEncryptor:
    """Encrypts Raft frames with AES-256-GCM, in place of pysyncobj's Fernet.

    pysyncobj's connections call `encrypt_at_time`, `extract_timestamp` and
    `decrypt` on whatever `SyncObj.encryptor` returns. Fernet (AES-CBC, then
    HMAC-SHA256, then base64) costs ~10x more per frame than one AES-GCM call,
    and every write crosses four frames on its way to commit. Token:
    version (1) | timestamp (8, authenticated as associated data) | nonce (12)
    | ciphertext and tag. The key comes from the password by PBKDF2-SHA256
    (200,000 rounds, a Corral-specific fixed salt, as pysyncobj derives its
    own): every member must share the password, nothing else.
    """

    VERSION = b"\x01"
    _SALT = b"corral-raft-aead-v1"

    def __init__(self, password: str) -> None:
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=self._SALT,
                         iterations=200_000)
        self._aead = AESGCM(kdf.derive(password.encode()))

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        header = self.VERSION + struct.pack(">Q", max(0, int(current_time)))
        nonce = os.urandom(12)
        return header + nonce + self._aead.encrypt(nonce, data, header)

    def extract_timestamp(self, token: bytes) -> int:
        if len(token) < 21 or token[:1] != self.VERSION:
            raise ValueError("not a Corral Raft frame")
        return int(struct.unpack_from(">Q", token, 1)[0])

    def decrypt(self, token: bytes) -> bytes:
        return self._aead.decrypt(token[9:21], token[21:], token[:9])


class FrameCodec:
    """Stands in for the `zlib` module inside pysyncobj.tcp_connection.

    pysyncobj compresses every frame with `zlib.compress(data, 3)`; for the small
    frames Raft mostly sends (a few hundred bytes) that costs ~50-100 µs, mostly
    setting up deflate's state, and it is paid four times on every write's path
    to commit. Frames under 64 KiB now go as they are (marker 0); larger ones
    (batches for a lagging follower, snapshot chunks) are still compressed
    (marker 1). The marker sits inside the encrypted payload. Every member must
    run this codec (as they must share the frame encryption).
    """

    THRESHOLD = 64 * 1024

    @staticmethod
    def compress(data: bytes, level: int = 1) -> bytes:
        if len(data) < FrameCodec.THRESHOLD:
            return b"\x00" + data
        return b"\x01" + zlib.compress(data, 1)

    @staticmethod
    def decompress(data: bytes) -> bytes:
        if data[:1] == b"\x00":
            return data[1:]
        if data[:1] == b"\x01":
            return zlib.decompress(data[1:])
        raise ValueError("unknown Raft frame encoding")


# pysyncobj pickles every frame and every command with protocol 2, which stores
# each bytes object as a latin-1 string rebuilt by a codecs call on load: a Raft
# message carrying a few entries pickles ~5x slower than with protocol 4 and
# loads ~2x slower. Any member unpickles either protocol (pickle.loads reads the
# protocol from the data), so members of both kinds can talk to each other.
PICKLE_PROTOCOL = 4


def install_frame_codec() -> None:
    """Point pysyncobj's connections at FrameCodec, and its pickling at protocol 4
    (process-wide, idempotent)."""
    tcp_connection.zlib = FrameCodec  # type: ignore[assignment]
    setattr(sync_pickle, "__protocol", PICKLE_PROTOCOL)  # its module global "__protocol"
