"""``one_thread`` (tokenizers/threads.py): one torch thread inside, the caller's count after."""

from __future__ import annotations

import threading

import pytest
import torch

from tokenize_mm.tokenizers.threads import one_thread


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_one_thread_inside_and_restored_after(two_threads):
    with one_thread("cpu"):
        assert torch.get_num_threads() == 1
        with one_thread(torch.device("cpu")):  # nested: still one, and restored only once
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_restored_after_an_error(two_threads):
    with pytest.raises(RuntimeError, match="boom"), one_thread():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_another_device_is_left_alone(two_threads):
    with one_thread("meta"):
        assert torch.get_num_threads() == 2


def test_overlapping_python_threads_restore_the_count_once(two_threads):
    """A leaves while B is still inside: the count stays 1 until B leaves, then is 2 again."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside_after_a: list[int] = []

    def a():
        with one_thread():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with one_thread():
            b_in.set()
            a_out.wait(5)
            inside_after_a.append(torch.get_num_threads())

    workers = [threading.Thread(target=a), threading.Thread(target=b)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert inside_after_a == [1] and torch.get_num_threads() == 2
