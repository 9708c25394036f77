# AX_CHECK_COMPILE_FLAG_XF(FLAG): append FLAG to XF_CFLAGS when the compiler takes it.
AC_DEFUN([AX_CHECK_COMPILE_FLAG_XF], [
  AC_MSG_CHECKING([whether $CC accepts $1])
  xf_save_CFLAGS=$CFLAGS
  CFLAGS="$CFLAGS -Werror $1"
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])],
    [AC_MSG_RESULT([yes]); XF_CFLAGS="$XF_CFLAGS $1"], [AC_MSG_RESULT([no])])
  CFLAGS=$xf_save_CFLAGS
])
# AX_PTHREAD_XF: POSIX threads, the plain GNU/Linux way.
AC_DEFUN([AX_PTHREAD_XF], [
  AC_SEARCH_LIBS([pthread_create], [pthread], [],
    [AC_MSG_ERROR([POSIX threads are required])])
])
