"""Reading credentials: exactly one method, one scheme, one token (RFC 6750 §2, RFC 9110 §11).

* More than one ``Authorization`` field line → 400 ``invalid_request`` (AUTH-06,
  DPOP-21). Under WSGI the server merges repeated lines with ``,``, which then fails
  the token68 syntax and is refused the same way.
* The value must be ``scheme SP token68`` (RFC 9110 §11.4; RFC 6750 §2.1): anything
  else → 400 ``invalid_request``. The scheme is case-insensitive.
* A token in the query (``access_token``) or in a form body is never honoured
  (AUTH-05; FAPI 2.0 §5.3.4): alone → 401 with the bare challenge (E1); together with
  an ``Authorization`` header → 400 ``invalid_request`` (AUTH-04).
* ``Proxy-Authorization`` is never read (DPOP-22).

What the header says is recorded on the request state; verifying the token is the
job of the token control.
"""

from __future__ import annotations

import re

from ..errors import AuthenticationRequired, InvalidRequest
from ..policy import AuthPolicy
from ..request import RequestFacts
from . import Credentials, State
from .request import form_has_param, has_param

_CREDENTIALS = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([A-Za-z0-9\-._~+/]+=*)\Z")


def _token_in_query(facts: RequestFacts) -> bool:
    return has_param(facts.query, "access_token")


class AuthCheck:
    name = "auth"

    def __init__(self, policy: AuthPolicy) -> None:
        self.mode = policy.mode

    def run(self, facts: RequestFacts, state: State) -> None:
        lines = facts.headers.get_all("authorization")
        elsewhere = _token_in_query(facts) or form_has_param(facts, "access_token")
        if len(lines) > 1:
            raise InvalidRequest("authorization.duplicate")
        if not lines:
            if elsewhere:
                raise AuthenticationRequired("authorization.token_outside_header")
            return None
        m = _CREDENTIALS.match(lines[0])
        if m is None:
            # A comma cannot occur in credentials: it is how WSGI servers join repeated
            # field lines (RFC 9110 §5.3), so report it as the duplicate it is.
            if "," in lines[0]:
                # Several schemes may be in play: every challenge carries the error (DPOP-21).
                raise InvalidRequest("authorization.duplicate")
            denial = InvalidRequest("authorization.malformed")
            denial.scheme = lines[0].split(" ", 1)[0][:16] or None
            raise denial
        scheme = m.group(1)
        if elsewhere:
            denial = InvalidRequest("authorization.multiple_methods")
            denial.scheme = scheme
            raise denial
        state.credentials = Credentials(scheme=scheme, token=m.group(2))
        return None
