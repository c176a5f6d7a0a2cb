"""The literal ``TYPEID_*`` constants of Echo's DIND test kernel (``type_ids.generated.rs``).

They are opaque 32-byte values, *not* ``make_type_id(label)`` (reference §3.5): copied verbatim from
``shared/echo-dind/dind_typeids.json``.
"""

from __future__ import annotations

from warpmesh.engine.ident import TypeId

TYPEID_PAYLOAD_MOTION_V2 = TypeId(bytes.fromhex("98642abd9b2150f28beaacf9f37a39449eda78f7f3ace39b5a9ad852325dbc1f"))
TYPEID_STATE_NAV_OPEN = TypeId(bytes.fromhex("fbceb0fcb75552c73f4fe715a7114b4760e3b0a2fa7e87dabb7c2667990bc628"))
TYPEID_STATE_ROUTE_PATH = TypeId(bytes.fromhex("dc5b118ee2cf5f5890334ba5caa002f3f4de6e0d0d9866e107b797bc77c6aca2"))
TYPEID_STATE_THEME = TypeId(bytes.fromhex("a3beb44f97b962a4635f27dade308ddffded92ea7cc67529135c9f5f7c575e1d"))
TYPEID_STATE_KV = TypeId(bytes.fromhex("85f348fb9b462457ee85fb9a6c36c561249ed20d2f0517ddea793e55ce9d8313"))
TYPEID_VIEW_OP_MOVEENTITY = TypeId(bytes.fromhex("1f8636b3f7fced9f7af0744b7904848f57e3fe13be6c83133b37f4c8b5951da1"))
TYPEID_VIEW_OP_ROUTEPUSH = TypeId(bytes.fromhex("99d762be637eafe65aabc78927c358a650f0669803d1b90ddb785c210823073f"))
TYPEID_VIEW_OP_SETTHEME = TypeId(bytes.fromhex("b8fc67c8d286e8a59a4aac5b91790f20b9de65aac08cfbc27bd4875d0190d3d9"))
TYPEID_VIEW_OP_SHOWTOAST = TypeId(bytes.fromhex("b4b4595e6acb7bb1fb3bb19f01f1d2416a50c6e9c5bca20005dc1fb4021e582f"))
TYPEID_VIEW_OP_TOGGLENAV = TypeId(bytes.fromhex("e18a88a23ce82a013ddbd7b9ed67e18ccb414cc8a271d54f34487b81e54cf144"))

ALL = {name: value for name, value in globals().items() if name.startswith("TYPEID_")}
