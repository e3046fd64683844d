"""``qnas docs config``: print the config reference generated from the config models (``docs/config.md``)."""

from __future__ import annotations

import argparse

from nas.commands import register_command

__all__: list[str] = []

TOPICS = ("config",)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", choices=TOPICS, help="config: every config key with its type, default, range and "
                                                       "meaning")


@register_command("docs", help="print generated reference documentation (qnas docs config > docs/config.md)",
                  configure=_configure)
def _docs(args: argparse.Namespace) -> int:
    from nas.config_docs import config_reference

    print(config_reference(), end="")
    return 0
