"""What a handle's counters say was lost, and when there is news of it."""

from divertgui.engine.loss import LossWatch, loss_of


def test_lost_packets_and_the_packets_offered():
    loss = loss_of({"diverted": 32, "overflowed": 268, "expired": 0, "sniffed": 0, "bypassed": 5})
    assert (loss.lost, loss.offered, loss.parts) == (268, 300, {"overflowed": 268})
    assert loss.percent_text() == "89.3 %" and loss.parts_text() == "overflowed 268"


def test_expired_packets_were_read_by_no_one_and_count_once():
    loss = loss_of({"diverted": 90, "expired": 10})
    assert (loss.lost, loss.offered) == (10, 100)


def test_sniffed_copies_not_delivered_are_lost():
    loss = loss_of({"sniffed": 999, "sniff_lost": 1})
    assert (loss.lost, loss.offered, loss.parts_text()) == (1, 1000, "sniff_lost 1")


def test_packets_too_large_to_send_after_an_edit_are_lost_and_were_read():
    loss = loss_of({"diverted": 100, "send_failed": 4})
    assert (loss.lost, loss.offered, loss.parts_text()) == (4, 100, "send_failed 4")


def test_undelivered_messages_stand_in_when_the_kernel_count_is_missing():
    assert loss_of({"diverted": 10, "lost_messages": 4}).lost == 4
    assert loss_of({"diverted": 10, "lost_messages": 4, "overflowed": 6}).lost == 6


def test_a_small_loss_is_never_shown_as_zero():
    assert loss_of({"diverted": 99_999, "overflowed": 1}).percent_text() == "< 0.1 %"
    assert loss_of({}).percent_text() == "0.0 %"


def test_news_only_when_the_loss_grew():
    watch = LossWatch()
    assert watch.news({"diverted": 5}) is None
    loss, new = watch.news({"diverted": 5, "overflowed": 7})
    assert (loss.lost, new) == (7, 7)
    assert watch.news({"diverted": 9, "overflowed": 7}) is None
    assert watch.news({"diverted": 9, "overflowed": 10})[1] == 3
