"""The Debian roots behind the project's images (gsm8k_bench/serving/images.py): made once per flavour, and a
half-made one that an interrupted build left behind is started over, never finished on top (debootstrap
refuses that, and every later CI run then failed).  The real debootstrap runs in test_quickstart and the
Docker tests; here it is stood in for, to see what it is handed."""

from __future__ import annotations

from gsm8k_bench.serving import images


def test_a_half_made_root_is_started_over_and_a_finished_one_reused(tmp_path, monkeypatch):
    root = tmp_path / "images" / f"debian-{images.SUITE}-minbase"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "half").write_text("")  # what an interrupted debootstrap left, without its marker
    calls = []

    def debootstrap(argv: list[str]) -> None:  # records what it was asked and what it found there
        calls.append((argv[0], argv[-2], root.exists()))
        (root / "bin").mkdir(parents=True)

    monkeypatch.setattr(images, "_run", debootstrap)
    assert images.debian_root(tmp_path) == root
    assert calls == [("debootstrap", str(root), False)]  # the leftover was removed first
    assert sorted(p.name for p in root.iterdir()) == [".gsm8k-bench-debootstrap", "bin"]
    assert images.debian_root(tmp_path) == root and len(calls) == 1  # made once, then reused
