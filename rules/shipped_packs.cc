#include "rules/shipped_packs.h"

#include <dirent.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace palisade {

std::vector<std::string> FilesIn(const std::string& dir, absl::string_view suffix) {
  std::vector<std::string> files;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return files;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (absl::EndsWith(name, suffix)) files.push_back(dir + "/" + name);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  return files;
}

CidrSets ShippedPackCidrSets() {
  CidrSets sets;
  sets.emplace("cloudflare_token_ips", *CidrSet::Parse({"192.0.2.0/24", "2001:db8:c0::/48"}));
  return sets;
}

absl::StatusOr<std::shared_ptr<const RuleSet>> CompileShippedPacks(const std::string& dir) {
  std::vector<LoadedPack> packs;
  for (const std::string& f : FilesIn(dir, ".textproto")) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(f);
    if (!pack.ok()) return pack.status();
    packs.push_back(*std::move(pack));
  }
  if (packs.size() < 10) {
    return absl::NotFoundError(
        absl::StrCat(packs.size(), " packs under ", dir, "/: the rules are not in the runfiles"));
  }
  return RuleSet::Compile(packs, ShippedPackCidrSets());
}

}  // namespace palisade
