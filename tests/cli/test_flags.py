"""plmkit.cli.flags through the command-line parser: how a flag given more than once reads."""
from plmkit.cli import build_parser
from plmkit.cli.finetune import run_of_args
from plmkit.cli.pretrain import build_config


def test_a_list_setting_given_again_adds_to_it():
    parser = build_parser()
    pretrain = build_config(parser.parse_args(["pretrain", "--corpus", "a.txt", "--corpus", "b.txt", "c.txt",
                                               "--out", "o", "--max-steps", "1"]))
    assert pretrain.data.corpus == ["a.txt", "b.txt", "c.txt"]
    finetune = run_of_args(parser.parse_args(["finetune", "--task", "ner", "--model", "m", "--train", "t.conll",
                                              "--out", "o", "--lora-rank", "2", "--lora-targets", "q,v",
                                              "--lora-targets", "k"]))
    assert finetune.model.lora_targets == ("q", "v", "k")


def test_a_fixed_size_tuple_is_one_value_not_a_list():
    args = build_parser().parse_args(["pretrain", "--corpus", "a.txt", "--out", "o", "--max-steps", "1",
                                      "--betas", "0.8,0.9", "--betas", "0.7,0.95"])
    assert build_config(args).train.betas == (0.7, 0.95)
