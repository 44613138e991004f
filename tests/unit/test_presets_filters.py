"""The presets filters the gateway role uses."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.filter.presets import presets_changed, presets_using

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


OLD_PRESETS = """;
; managed
;
version = 1

[*]
stop-timeout = 10
threads = 2

[gemma-a]
model = /m/gemma.gguf
ctx-size = 2048

[gemma-b]
model = /m/gemma.gguf
ctx-size = 4096

[gemma-c]
model = /m/c.gguf
"""


def test_presets_changed_names_the_models_a_reload_stops():
    new = OLD_PRESETS.replace("ctx-size = 4096", "ctx-size = 8192").replace("[gemma-c]\nmodel = /m/c.gguf\n", "")
    new += "\n[gemma-d]\nmodel = /m/d.gguf\n"
    # gemma-b changed, gemma-c left the fleet; gemma-a is as it was and gemma-d is new (nothing to stop)
    assert presets_changed(OLD_PRESETS, new) == ["gemma-b", "gemma-c"]
    # a change of the shared section changes every model
    assert presets_changed(OLD_PRESETS, OLD_PRESETS.replace("threads = 2", "threads = 4")) == [
        "gemma-a",
        "gemma-b",
        "gemma-c",
    ]
    assert presets_changed(OLD_PRESETS, OLD_PRESETS) == []
    assert presets_changed("", OLD_PRESETS) == []  # the first run: nothing was loaded from a file
