// The host backend's executor: a queue of committed command buffers run in order by one thread,
// which spreads each dispatch's threadgroups over a pool of workers (itself included). Dispatches
// run one after another, so barriers need no work here; each worker owns its threadgroup memory,
// SIMD-group exchange area and fibers.
#include <chrono>
#include <deque>
#include <functional>
#include <thread>

#include "host.h"

namespace smelt_host {
namespace {

// Threadgroup memory of one worker: each [[threadgroup(i)]] slot at a 16-byte aligned offset.
struct Worker {
  ThreadgroupRunner runner;
  alignas(64) char threadgroup_memory[SMELT_MAX_THREADGROUP_MEMORY + 31 * 16];
};

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

  // Calls fn(worker, first, end) over [0, total) in chunks, on every worker, and returns when done.
  void run(unsigned total, unsigned chunk, const std::function<void(unsigned, unsigned, unsigned)>& fn) {
    if (total <= chunk || threads_.empty()) {
      fn(0, 0, total);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = &fn;
      total_ = total;
      chunk_ = chunk;
      next_.store(0);
      pending_ = unsigned(threads_.size());
      ++generation_;
    }
    wake_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(unsigned w) {
    for (;;) {
      unsigned first = next_.fetch_add(chunk_);
      if (first >= total_) return;
      unsigned end = total_ - first < chunk_ ? total_ : first + chunk_;
      (*job_)(w, first, end);
    }
  }
  void loop(unsigned w) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work(w);
      std::lock_guard<std::mutex> lock(m_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable wake_, done_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  unsigned pending_ = 0;
  const std::function<void(unsigned, unsigned, unsigned)>* job_ = nullptr;
  unsigned total_ = 0, chunk_ = 1;
  std::atomic<unsigned> next_{0};
};

}  // namespace

struct Executor::Impl {
  smelt_device* dev;
  Pool pool;
  std::mutex m;
  std::condition_variable work, finished;
  std::deque<smelt_cmd*> queue;
  bool stop = false;
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
    for (;;) {
      smelt_cmd* cmd;
      {
        std::unique_lock<std::mutex> lock(m);
        work.wait(lock, [this] { return stop || !queue.empty(); });
        if (queue.empty()) return;
        cmd = queue.front();
        queue.pop_front();
      }
      execute(cmd);
      for (auto& d : cmd->items)
        for (auto* b : d.buffers)
          if (b) buffer_release(b);
      {
        std::lock_guard<std::mutex> lock(m);
        cmd->state = cmd->error.empty() ? SMELT_CMD_COMPLETED : SMELT_ERROR;
        if (!cmd->error.empty() && unreported.empty()) {
          unreported = "command buffer #" + std::to_string(cmd->sequence) + " failed: " + cmd->error;
          unreported_sequence = cmd->sequence;
        }
        __atomic_store_n(dev->completion, cmd->sequence, __ATOMIC_RELEASE);
      }
      finished.notify_all();
    }
  }

  void execute(smelt_cmd* cmd) {
    for (auto& d : cmd->items) {
      if (d.barrier) continue;
      run_dispatch(cmd, d);
      if (!cmd->error.empty()) return;  // the rest of a failed command buffer is not run
    }
  }

  void run_dispatch(smelt_cmd* cmd, Dispatch& d) {
    smelt_hk_launch base{};
    for (int i = 0; i < 31; ++i) {
      if (d.buffers[i]) {
        base.buffers[i] = (char*)d.buffers[i]->memory + d.offsets[i];
        base.lengths[i] = d.buffers[i]->length - d.offsets[i];
      } else if (d.bytes_at[i] >= 0) {
        base.buffers[i] = (char*)d.bytes.data() + d.bytes_at[i];
        base.lengths[i] = d.bytes_len[i];
      }
    }
    base.grid = &d.grid;
    const KernelCode& code = *d.code;
    unsigned groups = d.grid.groups[0] * d.grid.groups[1] * d.grid.groups[2];
    unsigned per_group = d.grid.group[0] * d.grid.group[1] * d.grid.group[2];
    // Enough chunks to balance the workers, each big enough to amortize taking it.
    unsigned chunk = groups / (pool.size() * 8);
    unsigned min_chunk = per_group >= 4096 ? 1 : 4096 / per_group;
    if (chunk < min_chunk) chunk = min_chunk;
    if (code.info.needs_fibers || !code.loop_fn) chunk = 1;
    pool.run(groups, chunk, [&](unsigned w, unsigned first, unsigned end) {
      Worker& worker = pool.worker(w);
      smelt_hk_launch launch = base;
      size_t at = 0;
      for (uint32_t i = 0; i < d.ntgmem; ++i) {
        launch.threadgroup[i] = worker.threadgroup_memory + at;
        at += (d.tgmem[i] + 15u) & ~15u;
      }
      set_dispatch_context(cmd, &code);
      if (!code.info.needs_fibers && code.loop_fn) {
        code.loop_fn(&launch, first, end);
      } else {
        for (unsigned g = first; g < end; ++g) worker.runner.run(code.thread_fn, &launch, g);
      }
      set_dispatch_context(nullptr, nullptr);
    });
    uint32_t dynamic = 0;
    for (uint32_t i = 0; i < d.ntgmem; ++i) dynamic += (d.tgmem[i] + 15u) & ~15u;
    uint32_t fixed = code.static_threadgroup.load();
    if (fixed + dynamic > SMELT_MAX_THREADGROUP_MEMORY && cmd->error.empty())
      cmd->error = "kernel '" + code.info.name + "': " + std::to_string(fixed) + " bytes of threadgroup memory declared in the kernel plus " +
                   std::to_string(dynamic) + " bytes of [[threadgroup]] memory exceed Metal's limit of " +
                   std::to_string(SMELT_MAX_THREADGROUP_MEMORY);
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
  return impl_->outcome(cmd, error);
}

int Executor::wait(smelt_cmd* cmd, uint64_t timeout_ms, std::string& error) {
  std::unique_lock<std::mutex> lock(impl_->m);
  auto finished = [cmd] { return cmd->state == SMELT_CMD_COMPLETED || cmd->state == SMELT_ERROR; };
  if (timeout_ms == 0) {
    impl_->finished.wait(lock, finished);
  } else if (!impl_->finished.wait_for(lock, std::chrono::milliseconds(timeout_ms), finished)) {
    return SMELT_CMD_TIMEOUT;
  }
  return impl_->outcome(cmd, error);
}

}  // namespace smelt_host
