// For tests: runs SQL on a store's file through a second connection, a test's way to break (and
// mend) one kind of write, e.g. a trigger that aborts inserts into a table.
// Thread-safety: as SQLite's; each call opens and closes its own connection.
#ifndef PALISADE_SERVICES_STORE_SQL_FOR_TESTS_H_
#define PALISADE_SERVICES_STORE_SQL_FOR_TESTS_H_

#include <sqlite3.h>

#include <string>

#include "gtest/gtest.h"

namespace palisade {
namespace testing {

// Runs `sql` on the database at `path`; a failure fails the test, naming SQLite's reason.
inline void ExecSql(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

}  // namespace testing
}  // namespace palisade

#endif  // PALISADE_SERVICES_STORE_SQL_FOR_TESTS_H_
