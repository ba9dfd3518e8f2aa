"""The shipped weaver configs (omnijet_weaver.weaver.configs) and the omnijet-weaver-configs command, in-process."""

from __future__ import annotations

import pytest
from conftest import ROOT

from omnijet_weaver.cli import configs as cli
from omnijet_weaver.errors import ConfigError, OutputExistsError
from omnijet_weaver.weaver import configs

NETWORK = ["omnijet_cls", "omnijet_gpt", "omnijet_vqvae"]
DATA = ["five_classes", "jetclass", "qg_top", "quarkgluon", "tokens", "toplandscape"]


def test_the_configs_lie_inside_the_package_and_the_top_level_folders_link_to_them():
    assert configs.CONFIGS_DIR == ROOT / "omnijet_weaver" / "configs"
    assert list(configs.list_configs("network")) == NETWORK and list(configs.list_configs("data")) == DATA
    assert list(configs.list_configs()) == NETWORK + DATA
    for name in NETWORK:
        path = configs.network_config(name)
        assert path == configs.CONFIGS_DIR / "network" / f"{name}.py" and path.is_file()
        assert configs.network_config(f"{name}.py") == configs.config_path(name) == path
        # the user-facing copies of the repository are links to the shipped files
        assert (ROOT / "network_configs" / f"{name}.py").resolve() == path.resolve()
    for name in DATA:
        path = configs.data_config(name)
        assert path == configs.CONFIGS_DIR / "data" / f"{name}.yaml" and path.is_file()
        assert configs.data_config(f"{name}.yaml") == configs.config_path(f"{name}.yaml") == path
        assert (ROOT / "data_configs" / f"{name}.yaml").resolve() == path.resolve()


def test_an_unknown_name_fails_with_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as err:
        configs.config_path("omnijet_part")
    assert str(err.value) == ("no shipped weaver config 'omnijet_part': choose from " + ", ".join(NETWORK + DATA))
    with pytest.raises(ConfigError, match=r"^no shipped weaver network config 'qg_top': choose from omnijet_cls, "
                                          r"omnijet_gpt, omnijet_vqvae$"):
        configs.network_config("qg_top")  # a data config is not a network config
    with pytest.raises(ConfigError, match="choose from five_classes, jetclass, qg_top, quarkgluon, tokens, toplandscape$"):
        configs.data_config("qg_top.py")
    with pytest.raises(ConfigError, match="unknown config kind 'model': choose from network, data"):
        configs.list_configs("model")


def test_copy_writes_every_config_and_refuses_existing_files(tmp_path):
    dest = tmp_path / "new" / "my_configs"  # created with its parents
    written = configs.copy_configs(dest)
    expected = [dest / "network_configs" / f"{n}.py" for n in NETWORK] + \
               [dest / "data_configs" / f"{n}.yaml" for n in DATA]
    assert written == expected
    assert sorted(p for p in dest.rglob("*") if p.is_file()) == sorted(expected)  # no temporary file left
    for path, src in zip(written, configs.list_configs().values()):
        assert path.read_bytes() == src.read_bytes()
    # one file changed by the user: a second copy refuses all, before writing anything
    mine = dest / "data_configs" / "qg_top.yaml"
    mine.write_text("selection: (label_QCD == 1)\n")
    (dest / "network_configs" / "omnijet_gpt.py").unlink()
    with pytest.raises(OutputExistsError, match=rf"^{dest}: {len(expected) - 1} of the {len(expected)} configs exist there already \(e.g. "
                                                rf"{dest}/network_configs/omnijet_cls.py\): pass --overwrite"):
        configs.copy_configs(dest)
    assert mine.read_text() == "selection: (label_QCD == 1)\n"
    assert not (dest / "network_configs" / "omnijet_gpt.py").exists()
    assert configs.copy_configs(dest, overwrite=True) == expected
    assert mine.read_bytes() == configs.data_config("qg_top").read_bytes()
    restored = dest / "network_configs" / "omnijet_gpt.py"
    assert restored.read_bytes() == configs.network_config("omnijet_gpt").read_bytes()
    # a file where the folder should be
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputExistsError, match="exists and is not a folder"):
        configs.copy_configs(tmp_path / "afile", overwrite=True)


def test_the_command_lists_prints_one_path_and_copies(tmp_path, capsys):
    cli.main([])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "network configs (weaver --network-config):" and out[4] == "data configs (weaver --data-config):"
    assert out[1].split() == ["omnijet_cls", str(configs.network_config("omnijet_cls"))]
    assert [line.split()[0] for line in out[5:]] == DATA
    cli.main(["--path", "omnijet_gpt.py"])
    assert capsys.readouterr().out == f"{configs.network_config('omnijet_gpt')}\n"
    cli.main(["--copy", str(tmp_path / "c")])
    captured = capsys.readouterr()
    copied = [tmp_path / "c" / "network_configs" / f"{n}.py" for n in NETWORK] + \
             [tmp_path / "c" / "data_configs" / f"{n}.yaml" for n in DATA]
    assert captured.out.splitlines() == [str(p) for p in copied] and all(p.is_file() for p in copied)
    assert f"--network-config {tmp_path / 'c' / 'network_configs' / 'omnijet_cls.py'}" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--path", "nope"], "no shipped weaver config 'nope': choose from omnijet_cls, "),
    (["--overwrite"], "--overwrite only goes with --copy DIR"),
    (["--path", "qg_top", "--copy", "x"], "argument --copy: not allowed with argument --path"),
])
def test_the_command_fails_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"omnijet-weaver-configs: error: {message}")
