"""plmkit's top level: every public name imports, and every family's model classes are there by their
Hugging Face names (`from plmkit import GPT2LMHeadModel`)."""
import subprocess
import sys

import pytest

import plmkit
from plmkit.models.registry import families


@pytest.mark.parametrize("name", plmkit.__all__)
def test_every_public_name_imports(name):
    assert getattr(plmkit, name) is not None
    exec(f"from plmkit import {name}", {})


def test_every_model_config_and_tokenizer_class_of_each_family_is_exported():
    for model_type, family in families().items():
        for cls in family.tasks.values():
            assert getattr(plmkit, cls.__name__) is cls, cls.__name__
        assert getattr(plmkit, family.config.__name__) is family.config
        assert plmkit.AutoConfig.for_model(model_type).__class__ is family.config
    for name in ("BertTokenizer", "BertTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast", "LlamaTokenizer",
                 "LlamaTokenizerFast", "BartTokenizer", "BartTokenizerFast", "MarianTokenizer"):
        assert getattr(plmkit, name) is plmkit.Tokenizer


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'GPT2DoubleHeadsModel'"):
        plmkit.GPT2DoubleHeadsModel  # noqa: B018


def test_import_plmkit_stays_light():
    code = "import sys, plmkit; print(any(m == 'torch' or m.startswith('plmkit.models') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
