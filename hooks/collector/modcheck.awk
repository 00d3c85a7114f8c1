# rescue module check, run by collect.sh with busybox awk -f: walks the closure of the root file system's
# module (each process costs milliseconds under qemu TCG, so one program, no per-module greps).
# busybox modprobe ignores softdeps, so the walk is ours: modules.dep and modules.softdep, aliases from
# modules.alias and modules.builtin.modinfo (built-in aliases live only there), /proc/modules, the files that
# are really in the image, and each .ko's own depends= (depmod on a trimmed image forgets what is not there).
#
# Variables (-v): ROOTFS, CSUM, FSTYPE, SOURCE (what to check and where that came from); OUT, DEPOUT,
# FOLLOW (files it writes); DEP, SOFT, ALIAS, BUILTIN, BINFO, LOADED, FILES, KODEPS, CRYPTO (the input
# files, also given as operands in that order, so FILENAME tells them apart).
function norm(s) { gsub("-", "_", s); return s }
function base(p, b) { b = p; sub(/.*\//, "", b); sub(/[.]ko.*$/, "", b); return norm(b) }
function known(m) { return (m in loaded) || (m in builtin) || (m in path) }
function status(m) {
	if (m in loaded) return "loaded"
	if (m in builtin) return "builtin"
	if ((m in path) && (path[m] in have)) return "available"
	return "missing"
}
function rank(s) { return s == "loaded" ? 1 : s == "builtin" ? 2 : s == "available" ? 3 : 4 }
function glob2re(g, r) { r = g; gsub(/[.]/, "[.]", r); gsub(/[*]/, ".*", r); gsub(/[?]/, ".", r); return "^" r "$" }
function providers(a, r, i) {
	if (a in exact) return exact[a]
	r = ""
	for (i = 1; i <= nw; i++) if (a ~ glob2re(wild[i])) r = r " " wildm[i]
	return r
}
function add(name, kind, parent) { qn++; q[qn] = name; qk[qn] = kind; qp[qn] = parent }
function addcrypto(c) { if (!(c in cseen)) { cseen[c] = 1; cn++; clist[cn] = c } }
FILENAME == DEP { i = index($0, ":"); if (i == 0) next; p = substr($0, 1, i - 1); m = base(p)
	path[m] = p; deps[m] = substr($0, i + 1); depline[m] = $0; next }
FILENAME == SOFT { if ($1 == "softdep") { m = norm($2); softline[m] = softline[m] $0 "\n"
	for (i = 3; i <= NF; i++) if ($i != "pre:" && $i != "post:") soft[m] = soft[m] " " $i }; next }
FILENAME == ALIAS { if ($1 == "alias" && NF == 3) { if ($2 ~ /[*?[]/) { nw++; wild[nw] = $2; wildm[nw] = norm($3) }
	else exact[$2] = exact[$2] " " norm($3) }; next }
FILENAME == BUILTIN { if ($0 != "") builtin[base($0)] = 1; next }
FILENAME == BINFO { i = index($0, "."); m = norm(substr($0, 1, i - 1)); rest = substr($0, i + 1)
	if (rest ~ /^alias=/) { a = substr(rest, 7); exact[a] = exact[a] " " m }
	else if (rest ~ /^softdep=/) { softline[m] = softline[m] "# built-in " $0 "\n"; n = split(substr(rest, 9), w, " ")
		for (j = 1; j <= n; j++) if (w[j] != "pre:" && w[j] != "post:") soft[m] = soft[m] " " w[j] }
	next }
FILENAME == LOADED { loaded[norm($1)] = 1; next }
FILENAME == FILES { have[$0] = 1; next }
FILENAME == KODEPS { kod[$1] = $2; next }
FILENAME == CRYPTO { if ($1 == "name") cname = $3; else if ($1 == "driver" && !(cname in cdrv)) cdrv[cname] = $3; next }
END {
	printf "" > DEPOUT
	printf "" > FOLLOW
	print "# rescue modcheck 1" > OUT
	print "fstype " FSTYPE " source=" SOURCE > OUT
	if (ROOTFS == "") {
		print "# the root filesystem type is unknown: no modules checked" > OUT
		print "result ok" > OUT
		exit
	}
	root = norm(ROOTFS)
	if (!known(root)) { n = split(providers("fs-" ROOTFS), w, " "); if (n > 0) root = w[1] }
	qn = 0; qi = 0; missing = ""
	add(root, "root", "-")
	while (qi < qn) {
		qi++; name = q[qi]
		if (name in seen) continue
		seen[name] = 1
		prov = ""; follow = ""
		if (known(norm(name))) { st = status(norm(name)); follow = norm(name) }
		else {
			st = "missing"; n = split(providers(name), w, " ")
			for (j = 1; j <= n; j++) { s = status(w[j]); if (prov == "" || rank(s) < rank(st)) { st = s; prov = w[j] } }
			if (st != "missing") follow = prov
			if (name ~ /^crypto-/) addcrypto(substr(name, 8)); else if (qk[qi] == "softdep") addcrypto(name)
		}
		print "need " name " " qk[qi] " " qp[qi] " " st (prov != "" ? " " prov : "") > OUT
		# A missing softdep fails the check when it is crc32c (the default checksum of btrfs and ext4) or
		# the checksum the root filesystem uses; the other checksum modules only matter to other filesystems.
		if (st == "missing" && (qk[qi] != "softdep" || name ~ /^(crypto-)?crc32c$/ || \
			(CSUM != "" && (name == CSUM || name == "crypto-" CSUM))))
			missing = missing (missing == "" ? "" : ",") name
		else if (st == "missing") optional = optional (optional == "" ? "" : ",") name
		if (follow == "") continue
		if (follow in path) {
			p = path[follow]
			print depline[follow] > DEPOUT
			if (p in kod) print "# " p " depends=" kod[p] > DEPOUT
			else if (p in have) print p > FOLLOW
			n = split(deps[follow], w, " "); for (j = 1; j <= n; j++) add(base(w[j]), "dep", follow)
			if (p in kod) { n = split(kod[p], w, ","); for (j = 1; j <= n; j++) if (w[j] != "") add(norm(w[j]), "dep", follow) }
		}
		if (follow in softline) printf "%s", softline[follow] > DEPOUT
		n = split(soft[follow], w, " "); for (j = 1; j <= n; j++) add(w[j], "softdep", follow)
	}
	# btrfs needs crc32c whatever provides it (a library, not a crypto module, on kernels >= 6.14).
	if (FSTYPE == "btrfs") addcrypto("crc32c")
	for (j = 1; j <= cn; j++) {
		c = clist[j]
		if (c in cdrv) print "crypto " c " present driver=" cdrv[c] > OUT
		else print "crypto " c " absent" > OUT
	}
	if (CSUM != "") print "# btrfs checksum: " CSUM > OUT
	if (optional != "") print "# missing, needed only by filesystems that use them: " optional > OUT
	print (missing == "" ? "result ok" : "result fail missing=" missing) > OUT
}
