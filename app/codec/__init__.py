"""Wire formats for tensors: JSON, safetensors, and choosing between them.

The modules are re-exported under unambiguous names; `codec` never imports
FastAPI, the optimizers or the stores.
"""

from app.codec import json_tensors, negotiate, safetensors
from app.codec.json_tensors import (
    JSON_DTYPES,
    decode_tensor,
    decode_tensors,
    dumps,
    encode_tensor,
    encode_tensors,
    parse_body,
)
from app.codec.negotiate import (
    JSON,
    OCTET,
    SAFETENSORS,
    Format,
    request_format,
    response_format,
)
from app.codec.safetensors import FLOAT_DTYPES, INT_DTYPES, check_finite
from app.codec.safetensors import decode as decode_safetensors
from app.codec.safetensors import encode as encode_safetensors
from app.codec.safetensors import encode_parts as encode_safetensors_parts

__all__ = [
    "FLOAT_DTYPES",
    "INT_DTYPES",
    "JSON",
    "JSON_DTYPES",
    "OCTET",
    "SAFETENSORS",
    "Format",
    "check_finite",
    "decode_safetensors",
    "decode_tensor",
    "decode_tensors",
    "dumps",
    "encode_safetensors",
    "encode_safetensors_parts",
    "encode_tensor",
    "encode_tensors",
    "json_tensors",
    "negotiate",
    "parse_body",
    "request_format",
    "response_format",
    "safetensors",
]
