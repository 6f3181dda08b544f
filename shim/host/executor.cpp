// The host backend's executor: a queue of committed command buffers run in order, one at a time,
// by a runner thread of its own or by a thread waiting for one of them, which spreads each
// dispatch's threadgroups over a pool of workers (itself included) when they are worth waking.
// Dispatches between two barriers are one job, so a barrier is where the workers meet; each worker
// owns its threadgroup memory, SIMD-group exchange area and fibers.
//
// Waking a sleeping thread costs the waker several microseconds (an inter-processor interrupt, a
// VM exit in a VM) and the sleeper about as long again before it runs: for small command buffers
// and dispatches that is most of their time. So a waiting thread runs its command buffer itself
// when nothing else runs, rather than be woken when the runner is done, and the other workers are
// woken only for dispatches long enough to pay for it.
#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <thread>

#include "host.h"

namespace smelt_host {
namespace {

// The rest of a dispatch goes to the other workers only when it is estimated to take longer than
// waking them costs the dispatching thread and them (see above), with a margin.
constexpr double kShareNs = 30000;
// The same while no thread waits for a command buffer: the caller is then at work on a core of its
// own (JavaScript building the next evaluation while this one runs, as generation does), and a
// worker woken for a dispatch of a few hundred microseconds takes that core from it rather than
// an idle one: both finish later than the dispatch would have alone.
constexpr double kShareBusyNs = 300000;
// How long a worker spins after its part of a dispatch before it sleeps: the dispatches of a
// command buffer follow each other closely, and one that finds the workers awake wakes nobody.
constexpr auto kSpin = std::chrono::microseconds(20);

// Spins while busy() holds, for at most kSpin.
template <class F>
void spin_while(F busy) {
  auto until = std::chrono::steady_clock::now() + kSpin;
  while (busy() && std::chrono::steady_clock::now() < until)
    for (int i = 0; i < 32; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      asm volatile("yield");
#endif
    }
}

using Job = std::function<void(unsigned, unsigned, unsigned)>;

// Threadgroup memory of one worker: each [[threadgroup(i)]] slot at a 16-byte aligned offset.
struct Worker {
  ThreadgroupRunner runner;
  alignas(64) char threadgroup_memory[SMELT_MAX_THREADGROUP_MEMORY + 31 * 16];
};

// Worker 0 is whichever thread calls run(); one thread at a time does.
class Pool {
 public:
  explicit Pool(unsigned n) : workers_(n) {
    for (unsigned i = 0; i < n; ++i) workers_[i].reset(new Worker());
    for (unsigned i = 1; i < n; ++i) threads_.emplace_back([this, i] { loop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  Worker& worker(unsigned i) { return *workers_[i]; }
  unsigned size() const { return unsigned(workers_.size()); }

  // Calls fn(worker, first, end) over [0, total) in chunks and returns when every call returned.
  // The calling thread starts alone on chunks of doubling length and times them: the others are
  // woken only when the estimated rest is worth it, so that a small dispatch never pays for a wake
  // and a long one uses every worker however few threadgroups it has.
  // waiters: the threads waiting for a command buffer (Executor::Impl::waiters), read when deciding.
  void run(unsigned total, const Job& fn, const std::atomic<unsigned>& waiters) {
    if (threads_.empty()) {
      fn(0, 0, total);
      return;
    }
    using clock = std::chrono::steady_clock;
    clock::time_point start;
    if (total > 1) start = clock::now();
    for (unsigned done = 0, step = 1;;) {
      unsigned end = total - done > step ? done + step : total;
      fn(0, done, end);
      if (end == total) return;
      done = end;
      double per_group = std::chrono::duration<double, std::nano>(clock::now() - start).count() / done;
      const double share_ns = waiters.load(std::memory_order_relaxed) ? kShareNs : kShareBusyNs;
      if (per_group * (total - done) > share_ns) {
        share(done, total, fn);
        return;
      }
      step = done;
    }
  }

 private:
  // Wakes the workers to take chunks of [from, total) with the calling thread, and waits for those
  // that joined; one that wakes after the calling thread ran out of work does not join.
  void share(unsigned from, unsigned total, const Job& fn) {
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = &fn;
      total_ = total;
      next_.store(from, std::memory_order_relaxed);
      open_ = true;
      ++generation_;
    }
    wake_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(m_);
    open_ = false;
    if (joined_ != 0) {
      // The others are on their last chunks, short ones: a sleep would cost more than it waits.
      lock.unlock();
      spin_while([this] { return joined_.load(std::memory_order_relaxed) != 0; });
      lock.lock();
    }
    done_.wait(lock, [this] { return joined_ == 0; });
  }
  // Guided self-scheduling: each chunk is a share of what is left, so chunks are few and long at
  // first (whole pages and cache lines each) and single threadgroups at the end, where the workers
  // must finish together.
  void work(unsigned w) {
    unsigned first = next_.load(std::memory_order_relaxed);
    for (;;) {
      if (first >= total_) return;
      unsigned n = (total_ - first) / (2 * size());
      unsigned end = first + (n ? n : 1);
      if (next_.compare_exchange_weak(first, end, std::memory_order_relaxed)) {
        (*job_)(w, first, end);
        first = next_.load(std::memory_order_relaxed);
      }
    }
  }
  void loop(unsigned w) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || (open_ && generation_ != seen); });
      if (stop_) return;
      seen = generation_;
      ++joined_;
      lock.unlock();
      work(w);
      lock.lock();
      if (--joined_ == 0) done_.notify_one();
      lock.unlock();
      spin_while([&] { return generation_.load(std::memory_order_relaxed) == seen; });
      lock.lock();
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable wake_, done_;
  bool stop_ = false;
  bool open_ = false;  // the job takes workers
  std::atomic<uint64_t> generation_{0};  // written under m_, watched without it by spinning workers
  std::atomic<unsigned> joined_{0};  // workers inside the job; written under m_
  const Job* job_ = nullptr;
  unsigned total_ = 0;
  std::atomic<unsigned> next_{0};
};

}  // namespace

struct Executor::Impl {
  smelt_device* dev;
  Pool pool;
  std::mutex m;
  std::condition_variable work, finished;
  std::deque<smelt_cmd*> queue;
  bool running = false;  // a command buffer is being run, by the runner or by a waiting thread
  smelt_cmd* running_cmd = nullptr;
  // The kernel being run, for the text of a lost device; its code lives in running_cmd's items.
  std::atomic<const KernelCode*> running_code{nullptr};
  bool stop = false;
  // Threads inside Executor::wait, running a command buffer or asleep until one is done.
  std::atomic<unsigned> waiters{0};
  std::thread runner;
  // The first failure nobody has waited for yet: reported once by the next wait or status.
  std::string unreported;
  uint64_t unreported_sequence = 0;

  // Under m: the outcome of a finished command buffer, with a failure elsewhere on the device
  // that has not been reported yet counting as this wait's failure.
  int outcome(smelt_cmd* cmd, std::string& error) {
    if (cmd->state == SMELT_ERROR) {
      error = cmd->error;
      if (unreported_sequence == cmd->sequence) unreported.clear(), unreported_sequence = 0;
      return SMELT_ERROR;
    }
    if (cmd->state == SMELT_CMD_COMPLETED && !unreported.empty()) {
      error.swap(unreported);
      unreported.clear();
      unreported_sequence = 0;
      return SMELT_ERROR;
    }
    return cmd->state;
  }

  Impl(smelt_device* d, unsigned threads) : dev(d), pool(threads ? threads : 1) {
    runner = std::thread([this] { loop(); });
  }

  void loop() {
    std::unique_lock<std::mutex> lock(m);
    for (;;) {
      if (!running && !queue.empty() && !dev->lost.load()) run_front(lock);
      else if (stop) return;
      else work.wait(lock);
    }
  }

  // Under m with nothing running: runs the first queued command buffer on this thread, with m
  // released meanwhile, and records its end.
  void run_front(std::unique_lock<std::mutex>& lock) {
    smelt_cmd* cmd = queue.front();
    queue.pop_front();
    running = true;
    running_cmd = cmd;
    lock.unlock();
    execute(cmd);
    for (auto& d : cmd->items)
      for (auto* b : d.buffers)
        if (b) buffer_release(b);
    lock.lock();
    running = false;
    running_cmd = nullptr;
    running_code.store(nullptr);
    cmd->state = cmd->error.empty() ? SMELT_CMD_COMPLETED : SMELT_ERROR;
    if (!cmd->error.empty() && unreported.empty()) {
      unreported = "command buffer #" + std::to_string(cmd->sequence) + " failed: " + cmd->error;
      unreported_sequence = cmd->sequence;
    }
    __atomic_store_n(dev->completion, cmd->sequence, __ATOMIC_RELEASE);
    finished.notify_all();
  }

  // Dispatches between barriers may run at once (as in Metal's concurrent encoder): each run of
  // them is one job over all their threadgroups, so the workers go from one dispatch to the next
  // without meeting in between; a barrier waits for every thread of the run before it.
  void execute(smelt_cmd* cmd) {
    auto& items = cmd->items;
    for (size_t i = 0; i < items.size();) {
      if (items[i].barrier) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < items.size() && !items[j].barrier) ++j;
      run_dispatches(cmd, &items[i], j - i);
      if (!cmd->error.empty()) return;  // the rest of a failed command buffer is not run
      i = j;
    }
  }

  struct Prepared {
    Dispatch* d;
    __smelt_hk_launch base;
    unsigned start;  // its first threadgroup in the run's numbering
  };

  void run_dispatches(smelt_cmd* cmd, Dispatch* ds, size_t n) {
    std::vector<Prepared> run(n);
    unsigned total = 0;
    for (size_t k = 0; k < n; ++k) {
      Dispatch& d = ds[k];
      Prepared& p = run[k];
      p.d = &d;
      p.base = __smelt_hk_launch{};
      for (int i = 0; i < 31; ++i) {
        if (d.buffers[i]) {
          p.base.buffers[i] = (char*)d.buffers[i]->memory + d.offsets[i];
          p.base.lengths[i] = d.buffers[i]->length - d.offsets[i];
        } else if (d.bytes_at[i] >= 0) {
          p.base.buffers[i] = (char*)d.bytes.data() + d.bytes_at[i];
          p.base.lengths[i] = d.bytes_len[i];
        }
      }
      p.base.grid = &d.grid;
      p.start = total;
      total += d.grid.groups[0] * d.grid.groups[1] * d.grid.groups[2];
    }
    pool.run(total, [&](unsigned w, unsigned first, unsigned end) {
      Worker& worker = pool.worker(w);
      // The dispatch holding threadgroup `first`: the last one starting at or before it.
      size_t k = std::upper_bound(run.begin(), run.end(), first, [](unsigned g, const Prepared& p) { return g < p.start; }) - run.begin() - 1;
      while (first < end) {
        const Prepared& p = run[k];
        const Dispatch& d = *p.d;
        unsigned stop = k + 1 < n ? std::min(end, run[k + 1].start) : end;
        if (stop > first) {
          const KernelCode& code = *d.code;
          __smelt_hk_launch launch = p.base;
          size_t at = 0;
          for (uint32_t i = 0; i < d.ntgmem; ++i) {
            launch.threadgroup[i] = worker.threadgroup_memory + at;
            at += (d.tgmem[i] + 15u) & ~15u;
          }
          running_code.store(&code, std::memory_order_relaxed);
          set_dispatch_context(cmd, &code, &launch);
          if (!code.info.needs_fibers && code.loop_fn) {
            code.loop_fn(&launch, first - p.start, stop - p.start);
          } else {
            for (unsigned g = first; g < stop; ++g) worker.runner.run(code.thread_fn, &launch, g - p.start);
          }
          set_dispatch_context(nullptr, nullptr, nullptr);
          first = stop;
        }
        ++k;
      }
    }, waiters);
    for (size_t k = 0; k < n && cmd->error.empty(); ++k) {
      const Dispatch& d = ds[k];
      const KernelCode& code = *d.code;
      uint32_t dynamic = 0;
      for (uint32_t i = 0; i < d.ntgmem; ++i) dynamic += (d.tgmem[i] + 15u) & ~15u;
      uint32_t fixed = code.static_threadgroup.load();
      if (fixed + dynamic > SMELT_MAX_THREADGROUP_MEMORY)
        cmd->error = "kernel '" + code.info.name + "': " + std::to_string(fixed) + " bytes of threadgroup memory declared in the kernel plus " +
                     std::to_string(dynamic) + " bytes of [[threadgroup]] memory exceed Metal's limit of " +
                     std::to_string(SMELT_MAX_THREADGROUP_MEMORY);
    }
  }
};

Executor::Executor(smelt_device* dev, unsigned threads) : impl_(new Impl(dev, threads)) {}

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lock(impl_->m);
    impl_->stop = true;
  }
  impl_->work.notify_all();
  impl_->runner.join();
}

void Executor::submit(smelt_cmd* cmd) {
  {
    std::lock_guard<std::mutex> lock(impl_->m);
    cmd->state = SMELT_CMD_COMMITTED;
    impl_->queue.push_back(cmd);
  }
  impl_->work.notify_one();
}

int Executor::status(smelt_cmd* cmd, std::string& error) {
  std::lock_guard<std::mutex> lock(impl_->m);
  if (cmd->state == SMELT_CMD_COMMITTED && impl_->dev->lost.load()) {
    error = impl_->dev->lost_text;
    return SMELT_ERROR;
  }
  return impl_->outcome(cmd, error);
}

int Executor::abandon(smelt_cmd* cmd, std::string& error) {
  Impl& x = *impl_;
  std::lock_guard<std::mutex> lock(x.m);
  if (cmd->state == SMELT_CMD_COMPLETED || cmd->state == SMELT_ERROR) return SMELT_OK;
  if (!x.dev->lost.load()) {
    std::string text = "device lost: command buffer #" + std::to_string(cmd->sequence) + " was abandoned unfinished";
    const KernelCode* code = x.running_code.load();
    if (x.running_cmd && code) {
      text += x.running_cmd == cmd ? " in kernel '" + code->info.name + "'"
                                   : " behind command buffer #" + std::to_string(x.running_cmd->sequence) +
                                         ", in kernel '" + code->info.name + "'";
    }
    text += " (a kernel that never returns); open a new device";
    x.dev->lost_text = text;
    x.dev->lost.store(true, std::memory_order_release);
    // Nothing queued will run: give back what it holds, so its buffers can be freed.
    for (smelt_cmd* queued : x.queue) {
      for (auto& d : queued->items)
        for (auto*& b : d.buffers)
          if (b) buffer_release(b), b = nullptr;
      queued->error = text;
      queued->state = SMELT_ERROR;
    }
    x.queue.clear();
  }
  x.finished.notify_all();
  error = x.dev->lost_text;
  return SMELT_ERROR;
}

bool Executor::released(smelt_cmd* cmd) {
  std::lock_guard<std::mutex> lock(impl_->m);
  return cmd->state == SMELT_CMD_COMPLETED || cmd->state == SMELT_ERROR;
}

int Executor::wait(smelt_cmd* cmd, uint64_t timeout_ms, std::string& error) {
  Impl& x = *impl_;
  struct Waiting {
    std::atomic<unsigned>& n;
    explicit Waiting(std::atomic<unsigned>& c) : n(c) { n.fetch_add(1, std::memory_order_relaxed); }
    ~Waiting() { n.fetch_sub(1, std::memory_order_relaxed); }
  } waiting(x.waiters);
  std::unique_lock<std::mutex> lock(x.m);
  auto finished = [cmd] { return cmd->state == SMELT_CMD_COMPLETED || cmd->state == SMELT_ERROR; };
  // A lost device's runaway command buffer never finishes, and nothing queued behind it runs.
  auto gave_up = [&x] { return x.dev->lost.load(); };
  auto settled = [&] { return finished() || gave_up(); };
  if (timeout_ms == 0) {
    // Whenever nothing runs, this unfinished command buffer or one before it is first in the
    // queue: run it on this thread, which would otherwise sleep until the runner (woken by the
    // commit, but often not yet running) has done it and woken this one in turn.
    bool ran = false;
    while (!settled()) {
      if (x.running) {
        x.finished.wait(lock);
      } else {
        x.run_front(lock);
        ran = true;
      }
    }
    // The runner may have found this thread running and gone back to sleep: what is still
    // queued is its again.
    if (ran && !x.queue.empty()) x.work.notify_one();
  } else if (!x.finished.wait_for(lock, std::chrono::milliseconds(timeout_ms), settled)) {
    return SMELT_CMD_TIMEOUT;  // a wait that may give up only sleeps
  }
  if (!finished()) {
    error = x.dev->lost_text;
    return SMELT_ERROR;
  }
  return x.outcome(cmd, error);
}

}  // namespace smelt_host
