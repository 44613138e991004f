"""The presets filters the gateway role uses."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.filter.presets import presets_using

PRESETS = [
    {
        "name": "coder",
        "options": [("model", "/m/coder.gguf"), ("ctx-size", 4096), ("spec-draft-model", "/m/draft.gguf")],
    },
    {"name": "vision", "options": [("model", "/m/vision.gguf"), ("mmproj", "/m/mmproj-vision.gguf")]},
    {"name": "chat", "options": [("model", "/m/chat.gguf"), ("alias", ["small", "draft.gguf"])]},
]


def test_presets_using_finds_models_by_weights_projector_and_draft_model():
    assert presets_using(PRESETS, ["coder.gguf"]) == ["coder"]
    assert presets_using(PRESETS, ["mmproj-vision.gguf"]) == ["vision"]
    assert presets_using(PRESETS, ["draft.gguf", "chat.gguf"]) == ["coder", "chat"]


def test_presets_using_ignores_files_no_model_reads_and_values_that_are_not_paths():
    assert presets_using(PRESETS, []) == []
    assert presets_using(PRESETS, ["other.gguf", "4096"]) == []


def test_presets_using_refuses_a_string_that_would_match_letters():
    with pytest.raises(AnsibleFilterError, match="list of file names"):
        presets_using(PRESETS, "['coder.gguf']")
