"""The words feedback is made of: the ratings a user can give, and the roles of the messages it stores.

Defined once here; the wire types (`server/feedback_protocol.py`), the checks (`feedback/validation.py`),
the records and the table layout all use these.
"""

from __future__ import annotations

from typing import Literal, get_args

Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = get_args(Rating)

# The roles of a stored conversation. A chat request may also say "developer" (OpenAI's newer name for
# "system"); the gateway stores it as "system" (server/chat.py), so stored prompts, pair prompts and the
# training sets built from them only ever hold these three, the roles the model's chat template knows.
Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = get_args(Role)
