import re
from pathlib import Path

from mct.config import Config

DOC = Path(__file__).resolve().parent.parent / "docs" / "configs.md"


def test_every_config_field_is_documented_in_its_table():
    text = DOC.read_text()
    sections = dict(re.findall(r"^## \[(\w+)\]\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M))
    for table, field in Config.model_fields.items():
        assert table in sections, f"docs/configs.md has no [{table}] section"
        for name in field.annotation.model_fields:
            assert f"`{name}`" in sections[table], f"[{table}] {name} is missing from docs/configs.md"
