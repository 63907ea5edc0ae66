"""`rlgrid report` as a user runs it: outputs, numbers, the standalone HTML rendered in headless Chromium, bad input."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import figures
from analysis.load import load_runs
from analysis.report import FIGURE_TITLES
from analysis.scores import per_run_scores
from experiments.cli import main
from experiments.execute import RunOptions, execute_run
from experiments.runs import RunSpec
from experiments.suite import SUITES_DIR, load_suite
from tests.helpers import write_synthetic_runs

CELLS = {
    ("ppo", "default", "Hopper-v5"): 2400.0,
    ("ppo", "default", "Walker2d-v5"): 2800.0,
    ("ppo", "lr_x3", "Hopper-v5"): 1200.0,
    ("ppo", "lr_x3", "Walker2d-v5"): 1500.0,
    ("sac", "default", "Hopper-v5"): 3000.0,
    ("sac", "default", "Walker2d-v5"): 4000.0,
}


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_runs(root, CELLS, seeds=[1, 2, 3, 4], points=30, total_steps=1_000_000, noise=100.0)
    return root


@pytest.fixture(scope="module")
def report_dir(synthetic_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(synthetic_runs), "--out", str(out), "--normalize", "d4rl", "--reps", "500"]) == 0
    return out


def test_report_writes_tables_figures_and_html(report_dir, capsys):
    for name in ("scores", "aggregates", "probability_of_improvement", "reference_verdicts"):
        for ext in ("csv", "md", "tex"):
            assert (report_dir / "tables" / f"{name}.{ext}").stat().st_size > 50, (name, ext)
    for name in (
        "learning_curves",
        "training_curves",
        "aggregate_intervals",
        "performance_profiles",
        "sample_efficiency",
        "probability_of_improvement",
        "variant_comparison",
    ):
        png, pdf = (report_dir / "figures" / f"{name}.{ext}" for ext in ("png", "pdf"))
        assert png.stat().st_size > 5000 and pdf.exists(), name
    assert len(pd.read_csv(report_dir / "tables" / "probability_of_improvement.csv")) == 3, "every pair of 3 methods"
    markdown = (report_dir / "report.md").read_text()
    assert "## Reference comparison" in markdown and "](figures/learning_curves.png)" in markdown
    latex = (report_dir / "tables" / "scores.tex").read_text()
    assert latex.startswith(r"\begin{tabular}") and r"ppo[lr\_x3]" in latex and r"\bottomrule" in latex


def test_report_numbers_are_the_runs_numbers(report_dir, synthetic_runs):
    scores = pd.read_csv(report_dir / "tables" / "scores.csv").set_index(["method", "env_id"])
    expected = per_run_scores(load_runs(synthetic_runs), "eval-last", 10).groupby(["variant", "env_id"])["score"].mean()
    assert np.isclose(scores.loc[("ppo[lr_x3]", "Hopper-v5"), "score"], expected.loc[("lr_x3", "Hopper-v5")])
    assert (scores["seeds"] == 4).all() and (scores["steps"] == 1_000_000).all()
    assert ((scores["ci_low"] <= scores["score"]) & (scores["score"] <= scores["ci_high"])).all()
    # D4RL normalisation of Hopper: (score + 20.27) / (3234.3 + 20.27)
    hopper = scores.loc[("sac", "Hopper-v5")]
    assert np.isclose(hopper["normalized"], (hopper["score"] + 20.272305) / (3234.3 + 20.272305))
    aggregates = pd.read_csv(report_dir / "tables" / "aggregates.csv").set_index("method")
    assert aggregates.loc["sac", "IQM low"] > aggregates.loc["ppo[lr_x3]", "IQM high"], "clearly separated methods"
    verdicts = pd.read_csv(report_dir / "tables" / "reference_verdicts.csv")
    cleanrl_ppo = verdicts[
        (verdicts["reference"] == "cleanrl_benchmarks") & (verdicts["variant"] == "default") & (verdicts["algo"] == "ppo")
    ].set_index("env_id")
    assert cleanrl_ppo.loc["Hopper-v5", "verdict"] == "reproduced"  # 2400 vs CleanRL's 2382.86 ± 271.74
    assert cleanrl_ppo.loc["Hopper-v5", "versions"] == "ours v5, reference v4"


PROBE = (  # the page itself has no script; a copy gets one that counts the images the browser actually decoded
    '<script>addEventListener("load",()=>{const i=[...document.images];document.body.dataset.decoded='
    'i.filter(x=>x.complete&&x.naturalWidth>0).length+"/"+i.length;'
    'document.body.dataset.tables=document.querySelectorAll("table tr").length});</script></body>'
)


def chromium() -> str:
    """The headless browser's path; the test is skipped without one (failed where RLGRID_REQUIRE_BROWSER is set)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("RLGRID_REQUIRE_BROWSER"):
            pytest.fail("RLGRID_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium here (.ci/run installs it)")
    return browser


def render_in_chromium(page: str, tmp_path) -> str:
    """The DOM headless Chromium built from `page` (with the probe): `data-decoded="OK/ALL"` images, `data-tables` rows."""
    path = tmp_path / "probe.html"
    path.write_text(page.replace("</body>", PROBE))
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=10000",
        "--dump-dom",
        path.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_report_html_is_standalone_and_renders_in_a_headless_browser(report_dir, tmp_path):
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page), "must open offline"
    figures_in_page = page.count('src="data:image/png;base64,')
    assert figures_in_page == 7 and page.count("<table>") == 4
    chromium()
    dom = render_in_chromium(page, tmp_path)
    assert f'data-decoded="{figures_in_page}/{figures_in_page}"' in dom
    assert int(re.search(r'data-tables="(\d+)"', dom).group(1)) > 20
    broken = page.replace('src="data:image/png;base64,iVBOR', 'src="data:image/png;base64,AAAA', 1)
    assert f'data-decoded="{figures_in_page - 1}/{figures_in_page}"' in render_in_chromium(broken, tmp_path), (
        "the probe sees a broken image"
    )


def test_report_on_real_runs_without_normalisation(tmp_path, capsys):
    tiny = {
        "total_timesteps": 1024,
        "num_envs": 2,
        "num_steps": 128,
        "update_epochs": 2,
        "num_minibatches": 4,
        "eval_every": 256,
        "eval_episodes": 2,
    }
    for seed in (1, 2):
        execute_run(
            RunSpec.create("ppo", "CartPole-v1", seed, tiny, suite="tiny"),
            RunOptions(runs_dir=tmp_path / "runs", progress=False),
        )
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--reps", "200", "--last-n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Scores per cell (eval-last)" in printed and "CartPole-v1" in printed
    assert "gymnasium reward_threshold" in printed, "CartPole-v1's threshold is a shipped reference"
    scores = pd.read_csv(tmp_path / "out" / "tables" / "scores.csv")
    assert scores.loc[0, "seeds"] == 2 and "normalized" not in scores
    assert (tmp_path / "out" / "figures" / "learning_curves.png").exists()
    assert not (tmp_path / "out" / "figures" / "variant_comparison.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/dir"], "no such run directory"),
        (["RUNS", "--pair", "ppo"], "expected X,Y"),
        (["RUNS", "--normalize", "zscore"], "--normalize 'zscore'"),
        (["RUNS", "--reference", "no_such_table"], "no reference table 'no_such_table'"),
        (["RUNS", "--reps", "10"], "--reps >= 100"),
        (["RUNS", "--normalize", "human"], "no 'Random'/'Human' scores for Hopper-v5"),
        (["RUNS", "--pair", "ppo,td3"], "unknown methods"),
    ],
)
def test_bad_report_options_fail_clearly(synthetic_runs, tmp_path, capsys, args, message):
    args = [str(synthetic_runs) if a == "RUNS" else a for a in args]
    code = main(["report", *args, "--out", str(tmp_path / "out")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.html").exists()


PUBLISHED = """\
source,algorithm,env_id,env_version_in_source,steps_or_frames,metric,value,std_or_ci_if_given,n_seeds_if_given,citation
paper,ppo,Hopper-v3,v3,1M env steps,final return,2300,±62 (standard error),5 (seeds),table 2
paper,sac,Hopper-v3,v3,1M env steps,final return,3100,,1 (single run),table 2
"""


def test_a_reference_table_with_free_text_seed_counts_is_used(synthetic_runs, tmp_path, capsys):
    """The published wording ("1 (single run)", a standard error) no longer aborts the report: both rows are compared,
    the standard error as a seed std (62 * sqrt(5))."""
    table = tmp_path / "published.csv"
    table.write_text(PUBLISHED)
    out = tmp_path / "out"
    code = main(["report", str(synthetic_runs), "--out", str(out), "--reference", str(table), "--reps", "200"])
    assert code == 0, capsys.readouterr().err
    verdicts = pd.read_csv(out / "tables" / "reference_verdicts.csv").set_index(["algo", "variant"])
    assert verdicts.loc[("ppo", "default"), "reference_n"] == 5
    assert np.isclose(verdicts.loc[("ppo", "default"), "reference_std"], 62 * np.sqrt(5))
    assert verdicts.loc[("sac", "default"), "reference_n"] == 1
    printed = capsys.readouterr().out
    assert "2,300.0 ± 138.6 (n=5)" in printed and "sac on Hopper-v3  3,100.0 " in printed


def test_an_unreadable_seed_count_stops_the_report_naming_the_cell(synthetic_runs, tmp_path, capsys):
    table = tmp_path / "published.csv"
    table.write_text(PUBLISHED.replace("1 (single run)", "one run"))
    out = tmp_path / "out"
    code = main(["report", str(synthetic_runs), "--out", str(out), "--reference", str(table)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("error: bad report options:")  # with any others
    assert f"{table}, row 3 (the header is row 1), column n_seeds_if_given: cannot read a seed count in 'one run'" in err
    assert not out.exists()  # refused before loading any run


def test_the_quickstart_suite_compares_two_algorithms_on_two_tasks():
    """The README's main command is a comparison: the shipped quickstart validates and names at least two algorithms,
    each run on CartPole-v1 and Acrobot-v1 with seeds 1-3 and the same budget, each with its classic-control setting."""
    quick = load_suite("quickstart")
    algos = sorted({s.algo for s in quick.specs})
    assert len(algos) >= 2, algos
    assert {(s.algo, s.env_id, s.seed) for s in quick.specs} == {
        (a, e, seed) for a in algos for e in ("CartPole-v1", "Acrobot-v1") for seed in (1, 2, 3)
    }
    assert {(s.config().total_timesteps, s.config().eval_every) for s in quick.specs} == {(100_000, 10_000)}
    configs = {s.algo: s.config() for s in quick.specs if s.env_id == "Acrobot-v1"}
    assert configs["ppo"].num_envs == 8 and configs["dqn"].learning_rate == 2.3e-3, "the tuned [algo.X.classic_control]"


def tiny_quickstart(tmp_path: Path) -> Path:
    """The shipped quickstart suite file, cut to 5,120 steps and 2 seeds: same algorithms, envs and settings."""
    text = (SUITES_DIR / "quickstart.toml").read_text()
    for key, value in (
        ("name", '"tiny-quickstart"'),
        ("seeds", "[1, 2]"),
        ("total_timesteps", "5_120"),  # 20 PPO batches; its 8 Acrobot copies finish their first (500-step) episodes
        ("eval_every", "2_560"),
        ("eval_episodes", "2"),
    ):
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert count == 1, key
    path = tmp_path / "tiny-quickstart.toml"
    path.write_text(text)
    return path


def test_a_tiny_quickstart_runs_end_to_end_and_its_report_compares(tmp_path, capsys):
    """`rlgrid run` + `rlgrid report` on the quickstart cut short: the report has the comparison figures (learning and
    training curves with both methods, aggregate intervals, probability of improvement, performance profiles), says in
    words which method scored higher, holds the reference verdicts of both methods, and renders in Chromium."""
    shipped, tiny = load_suite("quickstart"), load_suite(str(tiny_quickstart(tmp_path)))
    assert {(s.algo, s.env_id) for s in tiny.specs} == {(s.algo, s.env_id) for s in shipped.specs}
    assert len(tiny.specs) == 2 * len(shipped.specs) // 3
    runs, out = tmp_path / "runs", tmp_path / "report"
    assert main(["run", str(tmp_path / "tiny-quickstart.toml"), "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    assert main(["report", str(runs / "tiny-quickstart"), "--out", str(out), "--last-n", "2", "--reps", "200"]) == 0
    printed = capsys.readouterr().out

    comparison = ["learning_curves", "training_curves", "aggregate_intervals", "probability_of_improvement"]
    comparison += ["performance_profiles"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{n}.{e}" for n in comparison for e in ("png", "pdf")
    )
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(comparison)
    for name in comparison:
        assert f'alt="{html.escape(FIGURE_TITLES[name])}"' in page, name
        assert f"](figures/{name}.png)" in (out / "report.md").read_text(), name

    methods = sorted({s.algo for s in shipped.specs})
    scores = pd.read_csv(out / "tables" / "scores.csv")
    assert sorted(zip(scores["method"], scores["env_id"])) == sorted(
        (m, e) for m in methods for e in ("Acrobot-v1", "CartPole-v1")
    )
    assert (scores["seeds"] == 2).all() and (scores["steps"] == 5_120).all()
    improvement = pd.read_csv(out / "tables" / "probability_of_improvement.csv")
    assert len(improvement) == 1 and {improvement.loc[0, "X"], improvement.loc[0, "Y"]} == set(methods)
    verdicts = pd.read_csv(out / "tables" / "reference_verdicts.csv")
    assert set(verdicts["algo"]) == set(methods) and set(verdicts["env_id"]) == {"Acrobot-v1", "CartPole-v1"}
    assert "<h2>Summary</h2>" in page
    for env_id, cell in scores.groupby("env_id"):  # the summary names the higher-scoring method in each env, or a tie
        top = cell[cell["score"] == cell["score"].max()]["method"]
        line = next(line for line in printed.splitlines() if line.startswith(f"- {env_id} (eval-last"))
        assert (f"{top.iloc[0]} scores highest" if len(top) == 1 else " tie") in line, line
    frame = load_runs(runs)  # both methods' curves in each panel, as the report drew them
    for metric in ("eval/episodic_return", "charts/episodic_return"):
        fig = figures.plot_learning_curves(frame, metric, reps=100)
        for ax in fig.axes:
            labels = ax.get_legend_handles_labels()[1]
            assert {m for m in methods if f"{m} (2 seeds)" in labels} == set(methods), (metric, ax.get_title(), labels)

    dom = render_in_chromium(page, tmp_path)
    assert f'data-decoded="{len(comparison)}/{len(comparison)}"' in dom


VIDEO_PROBE = (  # counts the videos the browser decoded (a first frame of non-zero size)
    '<script>const v=[...document.querySelectorAll("video")];let ok=0;v.forEach(x=>{x.addEventListener("loadeddata",'
    '()=>{if(x.videoWidth>0)ok++;document.body.dataset.videos=ok+"/"+v.length});x.load()});'
    'document.body.dataset.videos="0/"+v.length;</script></body>'
)


def test_the_report_embeds_the_last_video_of_each_cell_and_chromium_plays_it(tmp_path, capsys):
    tiny = {"total_timesteps": 1024, "num_envs": 2, "num_steps": 128, "eval_every": 512, "eval_episodes": 2}
    for algo, seed in (("ppo", 1), ("ppo", 2), ("a2c", 1)):
        config = tiny if algo == "ppo" else {**tiny, "num_steps": 8}
        execute_run(
            RunSpec.create(algo, "CartPole-v1", seed, config, suite="filmed"),
            RunOptions(runs_dir=tmp_path / "runs", progress=False, capture_video=True),
        )
    out = tmp_path / "out"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), "--reps", "100", "--last-n", "1"]) == 0
    page = (out / "report.html").read_text()
    assert page.count('<video controls muted preload="metadata" src="data:video/mp4;base64,') == 2  # a2c and ppo cells
    assert "ppo on CartPole-v1, seed 1, step 1,024" in page and "a2c on CartPole-v1, seed 1, step 1,024" in page
    markdown = (out / "report.md").read_text()
    assert "(videos/ppo-CartPole-v1.mp4)" in markdown and (out / "videos" / "ppo-CartPole-v1.mp4").stat().st_size > 0
    probe = tmp_path / "videos.html"
    probe.write_text(page.replace("</body>", VIDEO_PROBE))
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    dom = subprocess.run(
        [*command, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-videos="2/2"' in dom, re.findall(r'data-videos="[^"]*"', dom)
