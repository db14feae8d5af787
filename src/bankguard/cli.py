"""The ``bankguard`` command.

bankguard check-policy FILE    validate a policy; print its problems or a summary
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .audit import resolve_sink
from .errors import ConfigurationError
from .policy import Policy


def check_policy(path: str) -> int:
    contract = None
    try:
        policy = Policy.from_yaml(path)
        resolve_sink(policy.audit)
        section = policy.openapi
        if section.spec is not None:
            from .openapi.contract import load_contract

            contract = load_contract(
                section.spec,
                base_path=section.base_path,
                strict=section.strict,
                query_date_time_without_offset=section.query_date_time_without_offset,
            )
            from .controls.contract import checked_operations

            checked_operations(policy, contract)
    except FileNotFoundError:
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    print(policy.summary())
    if contract is not None:
        print(
            f"openapi            {policy.openapi.spec}: OpenAPI {contract.version}, "
            f"{len(contract.operations)} operation{'' if len(contract.operations) == 1 else 's'}, "
            f"loaded in {contract.load_seconds * 1000:.0f} ms"
        )
        for warning in contract.warnings:
            print(f"  warning: {warning}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bankguard", description="bankguard command-line tools")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-policy", help="validate a policy file and summarise it")
    check.add_argument("file", help="policy YAML file")
    args = parser.parse_args(argv)
    if args.command == "check-policy":
        return check_policy(args.file)
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
