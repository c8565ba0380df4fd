import pytest

import serve_helpers as sh


@pytest.fixture(scope="session")
def minilm_classifier(tmp_path_factory, minilm_dir):
    """all-MiniLM-L6-v2 with a new (untrained) sentiment head, saved as a fine-tuned directory."""
    return sh.classifier_dir(minilm_dir, tmp_path_factory.mktemp("minilm-cls"))


@pytest.fixture(scope="module")
def client(url):
    """The official openai client of the module's server (its `url` fixture)."""
    return sh.openai_client(url)
