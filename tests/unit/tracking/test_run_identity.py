"""The names trackers show: a continued run is `{experiment}-continued-{backbone}` / `{backbone}_continued_{id}`."""

from tempering.config.schema import Config
from tempering.tracking.fanout import RunIdentity


def identity(meta, **sections):
    return RunIdentity(Config.model_validate({"run": {"name": "ner"}, **sections}), "ab12", meta)


def test_a_first_run_is_named_by_run_and_stage():
    named = identity({}, stage="pretrain")
    assert (named.experiment, named.run_name, named.tags) == ("ner-pretrain", "ner",
                                                              {"training_type": "pretrain", "tempering_run_id": "ab12"})


def test_a_continued_run_is_named_by_its_backbone_else_its_source_run():
    continued = {"post_training": True, "source_checkpoint": "/runs/docs/best"}
    decoder = identity(continued)
    assert (decoder.experiment, decoder.run_name) == ("ner-continued-docs", "docs_continued_ab12")
    encoder = identity({**continued, "backbone": "distilbert"}, tracking={"experiment": "kernel"})
    assert (encoder.experiment, encoder.run_name) == ("kernel-continued-distilbert", "distilbert_continued_ab12")
    assert encoder.tags["training_type"] == "continued" and encoder.tags["source_checkpoint"] == "/runs/docs/best"
    named = identity({**continued, "backbone": "distilbert"}, checkpoint={"backbone": "bert-base"})
    assert named.experiment == "ner-continued-bert-base"
