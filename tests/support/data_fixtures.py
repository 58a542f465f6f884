"""Small generated inputs for the data-layer tests: man page trees, catalogs, JSONL (helpers, not tests)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

# Real sentences per language so language ID has something to go on (templates × topics).
TOPICS = [
    (
        "copyfiles",
        "copy files between two directories safely",
        "Dateien sicher zwischen zwei Verzeichnissen kopieren",
        "files from the source directory into the destination directory, keeping their permissions and timestamps",
        "Dateien aus dem Quellverzeichnis in das Zielverzeichnis und behält dabei Berechtigungen und Zeitstempel",
    ),
    (
        "netcheck",
        "check whether a network host answers",
        "prüfen, ob ein Rechner im Netzwerk antwortet",
        "small packets to a remote host and reports how long each answer takes to come back",
        "kleine Pakete an einen entfernten Rechner und meldet, wie lange jede Antwort für den Rückweg braucht",
    ),
    (
        "diskuse",
        "show how much disk space each directory uses",
        "anzeigen, wie viel Speicherplatz jedes Verzeichnis belegt",
        "the size of every directory below the given path and prints the largest ones first",
        "die Größe jedes Verzeichnisses unterhalb des angegebenen Pfades und gibt die größten zuerst aus",
    ),
    (
        "mailsend",
        "send an electronic mail message",
        "eine elektronische Nachricht versenden",
        "a message with the given subject and body to every recipient listed on the command line",
        "eine Nachricht mit dem angegebenen Betreff und Text an jeden Empfänger auf der Befehlszeile",
    ),
    (
        "tarpack",
        "pack many files into one archive",
        "viele Dateien in ein Archiv packen",
        "the named files and directories into a single compressed archive that can be unpacked later",
        "die genannten Dateien und Verzeichnisse in ein einziges komprimiertes Archiv, das später entpackt werden kann",
    ),
    (
        "clockset",
        "set the system clock from a time server",
        "die Systemuhr nach einem Zeitserver stellen",
        "the current time from a server on the network and adjusts the system clock step by step",
        "die aktuelle Uhrzeit von einem Server im Netzwerk und passt die Systemuhr Schritt für Schritt an",
    ),
]
_EN_BODY = (
    "The {name} program reads {what}. It writes a short report to standard output when it has finished, "
    "and it exits with a non-zero status when something went wrong during the work."
)
_DE_BODY = (
    "Das Programm {name} verarbeitet {what}. Wenn es fertig ist, schreibt es einen kurzen Bericht auf die "
    "Standardausgabe, und es endet mit einem Fehlerstatus, wenn bei der Arbeit etwas schiefgegangen ist."
)


def _page(name: str, summary: str, body: str, heads: tuple[str, str, str]) -> str:
    return (
        f'.TH {name.upper()} 1 "2024" "{name} 1.0"\n.SH {heads[0]}\n{name} \\- {summary}\n'
        f".SH {heads[1]}\n.B {name}\n[\\fIOPTION\\fR]... \\fIFILE\\fR\n.SH {heads[2]}\n{body}\n.PP\n{body}\n"
    )


def write_man_tree(root: Path, topics: list[tuple] | None = None) -> Path:
    """`root/man1/*.1.gz` (English), `root/de/man1/*.1.gz` (German), one `.so` alias and one symlink."""
    topics = TOPICS if topics is None else topics
    (root / "man1").mkdir(parents=True, exist_ok=True)
    (root / "de" / "man1").mkdir(parents=True, exist_ok=True)
    for name, en_sum, de_sum, en_what, de_what in topics:
        en = _page(
            name, en_sum, _EN_BODY.format(name=name, what=en_what), ("NAME", "SYNOPSIS", "DESCRIPTION")
        )
        de = _page(
            name,
            de_sum,
            _DE_BODY.format(name=name, what=de_what),
            ("BEZEICHNUNG", "ÜBERSICHT", "BESCHREIBUNG"),
        )
        (root / "man1" / f"{name}.1.gz").write_bytes(gzip.compress(en.encode()))
        (root / "de" / "man1" / f"{name}.1.gz").write_bytes(gzip.compress(de.encode()))
    (root / "man1" / "cpfiles.1").write_text(".so man1/copyfiles.1\n")
    os.symlink(root / "man1" / "netcheck.1.gz", root / "man1" / "ping2.1.gz")
    return root


PO_TEMPLATE = """msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"
"Language: {lang}\\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\\n"

msgid "_Open the selected file in a new window"
msgstr "Die ausgewählte Datei in einem neuen _Fenster öffnen"

msgctxt "menu"
msgid "<b>Save</b> all changes before closing"
msgstr "<b>Alle</b> Änderungen vor dem Schließen speichern"

msgid "%d file was copied to the backup folder"
msgid_plural "%d files were copied to the backup folder"
msgstr[0] "%d Datei wurde in den Sicherungsordner kopiert"
msgstr[1] "%d Dateien wurden in den Sicherungsordner kopiert"

msgid "%s: %d"
msgstr "%s: %d"

msgid "%s (%s)"
msgstr "%s – %s"

msgid "Cancel"
msgstr ""

msgid "The connection to the server was lost unexpectedly"
msgstr "The connection to the server was lost unexpectedly, sorry"

#, fuzzy
msgid "Print the current page"
msgstr "Die aktuelle Seite drucken"

#~ msgid "Old message"
#~ msgstr "Alte Nachricht"
"""
