"""The README's config reference is generated from the config models; keep it in sync."""
from scripts.update_readme import README, render


def test_readme_config_reference_is_current():
    text = README.read_text()
    assert render(text) == text, "README config reference is stale: run `make docs`"
