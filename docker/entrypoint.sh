#!/bin/sh
# Entry point of the M3 image: the `platform` defaults of the one table of environment defaults
# (flows/environment.env, M3_ENV_TABLE overrides its path), then the command. A variable already set wins; the
# `hermetic` ones (Hub offline) are for the Makefile and the tests only, never applied here.
set -eu
table=${M3_ENV_TABLE:-/app/flows/environment.env}
scope=
while IFS= read -r line || [ -n "$line" ]; do
    case $line in
        "# [platform]"*) scope=platform ;;
        "# ["*) scope=other ;;
        "#"* | "") ;;
        *" ?= "*)
            key=${line%% ?= *}
            if [ "$scope" = platform ] && ! printenv "$key" >/dev/null; then
                export "$key=${line#* ?= }"
            fi
            ;;
        *) echo "$table: not a 'KEY ?= value' line: $line" >&2; exit 1 ;;
    esac
done <"$table"
exec "$@"
