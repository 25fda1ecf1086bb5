import platform

from cgcnn.training.allocator import keep_freed_memory


def test_allocator_setting_is_applied_on_glibc_and_idempotent():
    first = keep_freed_memory()
    assert keep_freed_memory() == first  # second call changes nothing
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
    else:
        assert first is False
