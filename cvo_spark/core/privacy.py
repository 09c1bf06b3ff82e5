"""Pseudonymisation of subscriber identifiers with a keyed hash (DESIGN invariant 8).

With ``ingest.privacy.pseudonymize: true`` every ``subscriber_id`` is replaced at ingest
by ``HMAC-SHA256(key, id)`` as 64 lowercase hex characters, before anything is written
to silver or quarantine. The same key always gives the same pseudonym, so joins between
tables still work and `cvo explain` can accept a raw id by hashing it the same way.

Spark has no built-in HMAC, so it is built from `F.sha2` over binary exactly as RFC 2104
defines it: ``H((K' xor opad) || H((K' xor ipad) || m))``, with ``K'`` the key padded to
the 64-byte SHA-256 block (a longer key is hashed first). The two padded keys are tiny and
computed on the driver; the per-row work is two `sha2` calls, no Python UDF.

The key comes from the environment only (never YAML, never the repo); the config names
the variable.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from pyspark.sql import Column
from pyspark.sql import functions as F

from cvo_spark.core.errors import ConfigError

#: SHA-256 block size in bytes: the length HMAC pads the key to.
_BLOCK_SIZE = 64
_IPAD = 0x36
_OPAD = 0x5C


def load_pseudonym_key(env_var: str) -> bytes:
    """Return the pseudonymisation key from environment variable `env_var` (UTF-8 bytes).

    Raises `ConfigError` naming the variable when it is unset or empty: pseudonymising
    with an empty or guessable key would only pretend to protect the ids.
    """
    value = os.environ.get(env_var, "")
    if not value:
        raise ConfigError(
            f"ingest.privacy.pseudonymize is on but environment variable {env_var} is unset or empty"
        )
    return value.encode("utf-8")


def hmac_padded_keys(key: bytes) -> tuple[bytes, bytes]:
    """Return ``(K' xor ipad, K' xor opad)`` for HMAC-SHA256 with `key` (RFC 2104)."""
    if not key:
        raise ValueError("HMAC key must not be empty")
    if len(key) > _BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK_SIZE, b"\x00")
    return bytes(b ^ _IPAD for b in padded), bytes(b ^ _OPAD for b in padded)


def pseudonymize_column(col: Column | str, key: bytes) -> Column:
    """``HMAC-SHA256(key, col)`` as lowercase hex: a Column expression, no UDF.

    Parameters
    ----------
    col : a string column (or its name); its UTF-8 bytes are the HMAC message.
    key : the secret key bytes (see `load_pseudonym_key`).

    Returns
    -------
    Column
        64 hex characters, equal to Python's
        ``hmac.new(key, value.encode(), hashlib.sha256).hexdigest()``; null stays null.
    """
    ipad_key, opad_key = hmac_padded_keys(key)
    message = (F.col(col) if isinstance(col, str) else col).cast("string").cast("binary")
    inner = F.unhex(F.sha2(F.concat(F.lit(bytearray(ipad_key)), message), 256))
    return F.sha2(F.concat(F.lit(bytearray(opad_key)), inner), 256)


#: Table property of append-only silver tables naming how their subscriber ids were written.
ID_MODE_PROPERTY = "cvo.subscriber_ids"


def id_mode(key: bytes | None) -> str:
    """``raw``, or ``hmac-sha256:<fingerprint>`` for pseudonyms made with `key`.

    The fingerprint is an HMAC of a fixed text under the key: the same key always gives
    the same one, and it reveals nothing of the key. Two modes that differ mean the ids
    of the two runs cannot be joined (raw against pseudonym, or two keys).
    """
    if key is None:
        return "raw"
    return "hmac-sha256:" + hmac.new(key, b"cvo_spark key fingerprint", hashlib.sha256).hexdigest()[:16]
