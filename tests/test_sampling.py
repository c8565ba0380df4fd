"""plmkit.sampling: the sampling settings of `plmkit generate` and `plmkit chat`, declared once."""
import pytest

from plmkit.cli import build_parser
from plmkit.cli.chat import SAMPLING_DEFAULTS
from plmkit.cli.generate import sampling_settings
from plmkit.sampling import SamplingSettings


def settings_of(command, *argv):
    args = build_parser().parse_args([command, "--model", "m", *(["--prompt", "x"] if command == "generate" else []),
                                      *argv])
    return sampling_settings(args, SAMPLING_DEFAULTS if command == "chat" else None)


def test_both_commands_take_the_same_flags_with_their_own_defaults():
    generate, chat = settings_of("generate"), settings_of("chat")
    assert generate == SamplingSettings() and (generate.max_new_tokens, generate.temperature) == (64, 0.8)
    assert (chat.max_new_tokens, chat.temperature, chat.top_p) == (128, 0.7, 0.9)
    argv = ["--max-new-tokens", "9", "--temperature", "0.5", "--top-k", "5", "--top-p", "0.8",
            "--repetition-penalty", "1.2", "--presence-penalty", "0.5", "--frequency-penalty", "-0.3", "--seed", "4"]
    assert settings_of("generate", *argv) == settings_of("chat", *argv)
    with pytest.raises(SystemExit):  # beams cannot stream a chat reply
        settings_of("chat", "--num-beams", "2")


def test_generate_kwargs():
    penalties = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                 "return_dict_in_generate": False}  # (and the ids, whatever the checkpoint's generation config says)
    assert SamplingSettings(greedy=True).generate_kwargs() == {"max_new_tokens": 64, "do_sample": False, **penalties}
    assert SamplingSettings(temperature=0).generate_kwargs()["do_sample"] is False
    assert SamplingSettings(num_beams=3).generate_kwargs()["num_beams"] == 3
    assert SamplingSettings(top_k=5).generate_kwargs() == {"max_new_tokens": 64, "do_sample": True, **penalties,
                                                           "temperature": 0.8, "top_k": 5, "top_p": 0.95}


def test_bad_values_are_named():
    from plmkit.errors import ConfigError
    with pytest.raises(ConfigError, match=r"num_beams \(--num-beams\) must be >= 1, got 0"):
        settings_of("generate", "--num-beams", "0")
    with pytest.raises(ConfigError, match=r"presence_penalty \(--presence-penalty\) must be in \[-2, 2\], got 2.5"):
        settings_of("chat", "--presence-penalty", "2.5")


def test_sampling_settings_given_where_nothing_samples_are_refused():
    from plmkit.errors import ConfigError
    for flags in (["--greedy", "--top-k", "5"], ["--num-beams", "2", "--temperature", "0.5"],
                  ["--temperature", "0", "--top-p", "0.5"], ["--greedy", "--seed", "3"]):
        with pytest.raises(ConfigError, match="applies to sampling only"):
            settings_of("generate", *flags)
    assert settings_of("chat", "--greedy").greedy  # chat's own sampling defaults are not "given"


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_top_k_not_given_is_left_to_generate_and_0_turns_it_off(command, capsys):
    """Without --top-k, generate() decides (the model's generation_config, else transformers' 50), as the help says:
    the keyword is left out (None would turn top-k off); --top-k 0 samples among all tokens."""
    assert "top_k" not in settings_of(command).generate_kwargs()
    assert settings_of(command, "--top-k", "0").generate_kwargs()["top_k"] == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "else 50, as transformers' generate" in " ".join(capsys.readouterr().out.split())
