// JobStore over SQLite (WAL mode, synchronous=NORMAL: survives a ternd crash; a power loss
// may drop the last few transactions). Protos are stored as serialized blobs next to the
// columns queries need.
#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/state/job_store.h"
#include "worker/core/status.h"

namespace tern::daemon {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL,
                                 state INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (job_id TEXT NOT NULL, round INTEGER NOT NULL,
                                   data BLOB NOT NULL, PRIMARY KEY (job_id, round));
CREATE TABLE IF NOT EXISTS events (job_id TEXT NOT NULL, seq INTEGER NOT NULL,
                                   data BLOB NOT NULL, PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS metrics (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,
                                    kind TEXT NOT NULL, step INTEGER NOT NULL,
                                    data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_by_job ON metrics (job_id, id);
CREATE TABLE IF NOT EXISTS metric_strides (job_id TEXT PRIMARY KEY, stride INTEGER NOT NULL,
                                           count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS workers (name TEXT PRIMARY KEY, data BLOB NOT NULL);
)sql";

// A prepared statement, reset on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("sqlite prepare: ", sqlite3_errmsg(db_)));
  }
  Stmt& Bind(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  absl::Status Run() {
    int rc = Step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_)));
  }
  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    return std::string(static_cast<const char*>(p), sqlite3_column_bytes(stmt_, col));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

template <class Msg>
absl::StatusOr<std::vector<Msg>> LoadAll(sqlite3* db, const char* sql, const std::string* key) {
  Stmt q(db, sql);
  if (!q.status().ok()) return q.status();
  if (key) q.Bind(1, *key);
  std::vector<Msg> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    Msg m;
    if (!m.ParseFromString(q.Blob(0))) {
      return absl::DataLossError(absl::StrCat("corrupt row in ternd state db (", sql, ")"));
    }
    out.push_back(std::move(m));
  }
  if (rc != SQLITE_DONE) return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db)));
  return out;
}

// Checkpoints the WAL into the database once a second on its own connection.
class Checkpointer {
 public:
  explicit Checkpointer(sqlite3* db) : db_(db), thread_([this] { Run(); }) {}
  ~Checkpointer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    sqlite3_close(db_);
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
      lock.unlock();
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      lock.lock();
    }
  }
  sqlite3* db_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

class SqliteJobStore : public JobStore {
 public:
  SqliteJobStore(sqlite3* db, sqlite3* checkpoint_db, int max_step_points)
      : db_(db),
        max_step_points_(max_step_points),
        checkpointer_(std::make_unique<Checkpointer>(checkpoint_db)) {}
  ~SqliteJobStore() override {
    checkpointer_.reset();
    sqlite3_close(db_);
  }

  absl::StatusOr<std::string> NextJobId() override {
    Stmt q(db_,
           "INSERT INTO meta (key, value) VALUES ('next_job', 1) "
           "ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value");
    TERN_RETURN_IF_ERROR(q.status());
    if (q.Step() != SQLITE_ROW) return absl::InternalError(sqlite3_errmsg(db_));
    return absl::StrFormat("j-%06d", q.Int(0));
  }

  absl::Status PutJob(const tern::v1::Job& job) override {
    Stmt q(db_,
           "INSERT INTO jobs (id, seq, state, data) VALUES (?1, ?2, ?3, ?4) "
           "ON CONFLICT(id) DO UPDATE SET state = ?3, data = ?4");
    TERN_RETURN_IF_ERROR(q.status());
    return q.Bind(1, job.id())
        .Bind(2, job.created_ms())
        .Bind(3, int64_t{job.state()})
        .BindBlob(4, job.SerializeAsString())
        .Run();
  }

  absl::StatusOr<std::vector<tern::v1::Job>> LoadJobs() override {
    return LoadAll<tern::v1::Job>(db_, "SELECT data FROM jobs ORDER BY seq, id", nullptr);
  }

  absl::Status PutRound(const tern::v1::Job& job) override {
    Stmt q(db_, "INSERT OR REPLACE INTO rounds (job_id, round, data) VALUES (?1, ?2, ?3)");
    TERN_RETURN_IF_ERROR(q.status());
    tern::v1::Job round;
    *round.mutable_placement() = job.placement();
    round.set_world_size(job.world_size());
    round.set_started_ms(job.started_ms());
    return q.Bind(1, job.id())
        .Bind(2, int64_t{job.round()})
        .BindBlob(3, round.SerializeAsString())
        .Run();
  }

  absl::Status AppendEvent(const tern::v1::JobEvent& event) override {
    Stmt q(db_, "INSERT OR REPLACE INTO events (job_id, seq, data) VALUES (?1, ?2, ?3)");
    TERN_RETURN_IF_ERROR(q.status());
    return q.Bind(1, event.job_id())
        .Bind(2, event.seq())
        .BindBlob(3, event.SerializeAsString())
        .Run();
  }

  absl::StatusOr<std::vector<tern::v1::JobEvent>> Events(const std::string& job_id) override {
    return LoadAll<tern::v1::JobEvent>(
        db_, "SELECT data FROM events WHERE job_id = ?1 ORDER BY seq", &job_id);
  }

  absl::Status AppendMetric(const tern::v1::MetricPoint& p) override {
    const bool is_step = p.kind() == "step";
    int64_t stride = 1;
    if (is_step) {
      TERN_ASSIGN_OR_RETURN(Stride s, GetStride(p.job_id()));
      if (p.step() % s.stride != 0) return absl::OkStatus();
      stride = s.stride;
      if (s.count + 1 > max_step_points_) {
        // Halve the history: keep step points on the doubled stride.
        stride *= 2;
        Stmt del(db_, "DELETE FROM metrics WHERE job_id = ?1 AND kind = 'step' AND step % ?2 != 0");
        TERN_RETURN_IF_ERROR(del.status());
        TERN_RETURN_IF_ERROR(del.Bind(1, p.job_id()).Bind(2, stride).Run());
        Stmt cnt(db_, "SELECT COUNT(*) FROM metrics WHERE job_id = ?1 AND kind = 'step'");
        TERN_RETURN_IF_ERROR(cnt.status());
        cnt.Bind(1, p.job_id());
        if (cnt.Step() != SQLITE_ROW) return absl::InternalError(sqlite3_errmsg(db_));
        s.count = cnt.Int(0);
        if (p.step() % stride != 0) return PutStride(p.job_id(), {stride, s.count});
      }
      TERN_RETURN_IF_ERROR(PutStride(p.job_id(), {stride, s.count + 1}));
    }
    Stmt q(db_, "INSERT INTO metrics (job_id, kind, step, data) VALUES (?1, ?2, ?3, ?4)");
    TERN_RETURN_IF_ERROR(q.status());
    return q.Bind(1, p.job_id())
        .Bind(2, p.kind())
        .Bind(3, p.step())
        .BindBlob(4, p.SerializeAsString())
        .Run();
  }

  absl::StatusOr<std::vector<tern::v1::MetricPoint>> Metrics(const std::string& job_id) override {
    return LoadAll<tern::v1::MetricPoint>(
        db_, "SELECT data FROM metrics WHERE job_id = ?1 ORDER BY id", &job_id);
  }

  absl::Status PutWorker(const tern::v1::WorkerInfo& w) override {
    Stmt q(db_, "INSERT OR REPLACE INTO workers (name, data) VALUES (?1, ?2)");
    TERN_RETURN_IF_ERROR(q.status());
    return q.Bind(1, w.name()).BindBlob(2, w.SerializeAsString()).Run();
  }

  absl::StatusOr<std::vector<tern::v1::WorkerInfo>> LoadWorkers() override {
    return LoadAll<tern::v1::WorkerInfo>(db_, "SELECT data FROM workers ORDER BY name", nullptr);
  }

 private:
  struct Stride {
    int64_t stride;
    int64_t count;
  };
  absl::StatusOr<Stride> GetStride(const std::string& job_id) {
    auto it = strides_.find(job_id);
    if (it != strides_.end()) return it->second;
    Stmt q(db_, "SELECT stride, count FROM metric_strides WHERE job_id = ?1");
    TERN_RETURN_IF_ERROR(q.status());
    q.Bind(1, job_id);
    Stride s{1, 0};
    if (q.Step() == SQLITE_ROW) s = {q.Int(0), q.Int(1)};
    strides_[job_id] = s;
    return s;
  }
  absl::Status PutStride(const std::string& job_id, Stride s) {
    strides_[job_id] = s;
    Stmt q(db_,
           "INSERT OR REPLACE INTO metric_strides (job_id, stride, count) VALUES (?1, ?2, ?3)");
    TERN_RETURN_IF_ERROR(q.status());
    return q.Bind(1, job_id).Bind(2, s.stride).Bind(3, s.count).Run();
  }

  sqlite3* db_;
  const int max_step_points_;
  std::map<std::string, Stride> strides_;
  std::unique_ptr<Checkpointer> checkpointer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::string& path,
                                                             int max_step_points) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open state db ", path, ": ", msg));
  }
  char* err = nullptr;
  std::string sql = absl::StrCat(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;"
      "PRAGMA wal_autocheckpoint=0;",
      kSchema);
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat("cannot initialise state db ", path, ": ", msg));
  }
  sqlite3* checkpoint_db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &checkpoint_db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(checkpoint_db);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open state db ", path, " twice"));
  }
  sqlite3_busy_timeout(checkpoint_db, 100);
  return std::unique_ptr<JobStore>(new SqliteJobStore(db, checkpoint_db, max_step_points));
}

}  // namespace tern::daemon
