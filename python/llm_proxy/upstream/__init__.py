"""The pooled upstream HTTP/1.1 client every provider adapter sends its requests through."""

from .client import UpstreamClient, UpstreamResponse, UpstreamStream
from .headers import passed_headers

__all__ = ["UpstreamClient", "UpstreamResponse", "UpstreamStream", "passed_headers"]
