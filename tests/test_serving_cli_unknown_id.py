"""``recgoat recommend``'s message for an unknown id reads as English for both kinds of id.

Why: the article was chosen by the id kind's first letter, so a user got "an user with fewer interactions…".
"""
from __future__ import annotations

from recgoat.serving.cli import _unknown_id


def test_an_unknown_user_and_item_take_the_right_article():
    user = _unknown_id("user", "nobody", {"u1": 0, "u2": 1}, 2)
    item = _unknown_id("item", "nothing", {"i1": 0}, 1)
    assert "and a user with fewer interactions than the dataset's k-core filter" in user and "an user" not in user
    assert "and an item with fewer interactions than the dataset's k-core filter" in item
