"""Settings carried whole from the command line: every MeasureSettings field and the attack (with the official
preset) reach ``measure`` and ``trajectory`` as one value each, equal to what the API builds."""
from __future__ import annotations

import dataclasses

import pytest

from landscape.attacks import AttackSettings
from landscape.cli import build_parser
from landscape.commands._common import attack_from_args, measure_settings_from_args, resolve_eps
from landscape.measures.settings import MeasureSettings

#: a non-default command-line value for every MeasureSettings field, and the value it must become
NON_DEFAULT = {
    "measures": (["--measures", "curv_adv,grad"], ("grad", "curv_adv")),
    "batch_size": (["--batch-size", "7"], 7),
    "seed": (["--seed", "4"], 4),
    "eig_iters": (["--eig-iters", "3"], 3),
    "hvp_method": (["--hvp-method", "func"], "func"),
    "dtype": (["--dtype", "float64"], "float64"),
    "weight_probe": (["--weight-probe", "9"], 9),
    "weight_layers": (["--weight-layers", "fc2.*"], "fc2.*"),
}


def _parse(command: str, *extra: str):
    head = ["measure", "ckpt.pt", "--out", "m.csv"] if command == "measure" else ["trajectory", "run", "--out", "o"]
    return build_parser().parse_args([*head, *extra])


def test_every_measure_settings_field_has_a_flag():
    assert set(NON_DEFAULT) == {f.name for f in dataclasses.fields(MeasureSettings)}


@pytest.mark.parametrize("command", ["measure", "trajectory"])
def test_every_measure_option_is_settable(command):
    assert measure_settings_from_args(_parse(command)) == MeasureSettings()
    args = _parse(command, *[a for flags, _ in NON_DEFAULT.values() for a in flags])
    assert measure_settings_from_args(args) == MeasureSettings(**{k: v for k, (_, v) in NON_DEFAULT.items()})
    assert measure_settings_from_args(_parse(command, "--float64")).dtype == "float64"
    spaced = measure_settings_from_args(_parse(command, "--measures", "grad", "w_trace,curv_adv", "w_eig_top"))
    assert spaced.measures == ("grad", "curv_adv", "w_eig_top", "w_trace")  # registry order


@pytest.mark.parametrize("command", ["measure", "trajectory"])
def test_attack_whole_and_the_official_preset(command):
    args = _parse(command, "--attack", "official", "--eps", "0.03", "--norm", "l2")
    assert attack_from_args(args) == AttackSettings.official(0.03, norm="l2")
    args = _parse(command, "--steps", "3", "--no-random-start", "--step-size", "0.01")
    resolve_eps(args)  # digits: 0.1
    assert attack_from_args(args) == AttackSettings("pgd", 0.1, 3, 0.01, "linf", False)
    with pytest.raises(ValueError, match="official fixes PGD-10.*--steps"):
        attack_from_args(_parse(command, "--attack", "official", "--eps", "0.1", "--steps", "5"))
