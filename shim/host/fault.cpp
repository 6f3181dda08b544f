// Faults in kernels. Every host buffer is followed by a guard page (smelt_buffer_new), so a kernel
// running past the end of a buffer faults at once; without this handler the process would die
// with the message of whatever handler it has (Bun's blames Bun). This one names the kernel and
// its command buffer in one line and aborts; faults anywhere else go on to the handler that was
// installed before it.
//
// Everything here runs inside a signal handler: no allocation, no locks, no stdio; one write(2).
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "host.h"

namespace smelt_host {
namespace {

struct sigaction g_previous_segv, g_previous_bus;
uintptr_t g_page = 4096;

// A line built in a fixed buffer.
struct Line {
  char text[512];
  size_t n = 0;
  void add(const char* s, size_t len) {
    for (size_t i = 0; i < len && n < sizeof text; ++i) text[n++] = s[i];
  }
  void add(const char* s) { add(s, std::strlen(s)); }
  void add(uint64_t v) {
    char digits[24];
    size_t k = 0;
    do digits[k++] = char('0' + v % 10);
    while ((v /= 10) != 0);
    while (k) add(&digits[--k], 1);
  }
};

// The buffer slot whose guard page holds addr: from the end of the bound range to the end of the
// guard page after it (a buffer of a MiB or more may end before its last page ends, see
// smelt_buffer_new), or -1.
int guarded_slot(const __smelt_hk_launch* launch, uintptr_t addr) {
  for (int i = 0; i < 31; ++i) {
    if (!launch->buffers[i]) continue;
    uintptr_t end = uintptr_t(launch->buffers[i]) + launch->lengths[i];
    uintptr_t guard = (end + g_page - 1) & ~(g_page - 1);
    if (addr >= end && addr < guard + g_page) return i;
  }
  return -1;
}

void chain(int sig, siginfo_t* info, void* context) {
  const struct sigaction& previous = sig == SIGBUS ? g_previous_bus : g_previous_segv;
  if (previous.sa_flags & SA_SIGINFO) {
    previous.sa_sigaction(sig, info, context);
  } else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
    // Returning runs the faulting instruction again, and the default action ends the process.
    signal(sig, SIG_DFL);
  } else {
    previous.sa_handler(sig);
  }
}

void on_fault(int sig, siginfo_t* info, void* context) {
  const DispatchContext* d = running_dispatch();
  if (d && d->cmd && d->code) {
    int slot = d->launch ? guarded_slot(d->launch, uintptr_t(info->si_addr)) : -1;
    Line line;
    line.add("smelt: kernel '");
    line.add(d->code->info.name.data(), d->code->info.name.size());
    line.add("' (command buffer #");
    line.add(d->cmd->sequence);
    if (slot >= 0) {
      line.add(") read or wrote past the end of buffer(");
      line.add(uint64_t(slot));
      line.add("); aborting (SMELT_HOST_DEBUG=1 reports the element)\n");
      ssize_t ignored = write(2, line.text, line.n);
      (void)ignored;
      // The process's own abort handler (Bun's) would add a report blaming itself.
      signal(SIGABRT, SIG_DFL);
      abort();
    }
    line.add(sig == SIGBUS ? ") crashed with SIGBUS" : ") crashed with SIGSEGV");
    line.add(" at an address outside its buffers' guard pages\n");
    ssize_t ignored = write(2, line.text, line.n);
    (void)ignored;
  }
  chain(sig, info, context);
}

}  // namespace

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_page = uintptr_t(sysconf(_SC_PAGESIZE));
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
    sigaction(SIGBUS, &sa, &g_previous_bus);
  });
}

}  // namespace smelt_host
