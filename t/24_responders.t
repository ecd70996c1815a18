# Responders nobody here wrote, on a separate httpd with the module's
# defaults: OpenSSL's own "openssl ocsp" (an index file, a delegated signer
# given with -rsigner, GET and POST) and Cloudflare's "cfssl ocspserve"
# (Debian's golang-cfssl: responses pre-signed by "cfssl ocspsign"). The
# module fetches, verifies and staples their answers; what each does
# differently is printed and noted in the README.
#
# "openssl ocsp -port" binds every interface and OpenSSL 3.0 takes no
# host:port there: it runs with t/tools/bind_loopback.c preloaded, which
# moves its wildcard bind to 127.0.0.1. It is never probed with a bare TCP
# connect (that leaves it spinning), and runs without -multi.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestUtil qw(t_write_file);
use File::Path qw(make_path remove_tree);
use JSON::PP ();
use POSIX ();
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 9;

my $vars = Apache::Test::vars();
my $t = $vars->{t_dir};
my $dir = "$t/pki/real";
my $root = "$vars->{t_logs}/real";
my ($oport, $cport, $sport) = map { RSTest::port($_) } 18740, 18741, 18731;
remove_tree($root);
make_path("$root/logs");
system('/usr/bin/python3', "$t/pki/mkpki.py", $dir, $oport) == 0 or die;
my $meta = JSON::PP::decode_json(RSTest::slurp("$dir/leaves.json"))->{leaves};

# the shim, built for this run
system('cc', '-shared', '-fPIC', '-o', "$root/bind_loopback.so", "$t/tools/bind_loopback.c",
       '-ldl') == 0 or die "cannot build t/tools/bind_loopback.c\n";

# OpenSSL's index: good valid, revoked revoked an hour ago
my @exp = gmtime(time + 365 * 86400);
my $exp = POSIX::strftime('%y%m%d%H%M%SZ', @exp);
my $rev = POSIX::strftime('%y%m%d%H%M%SZ', gmtime(time - 3600));
t_write_file("$root/index.txt",
             "V\t$exp\t\t$meta->{good}{serial}\tunknown\t/CN=good.rs.test\n"
           . "R\t$exp\t$rev,keyCompromise\t$meta->{revoked}{serial}\tunknown\t/CN=revoked.rs.test\n");
t_write_file("$root/index.txt.attr", "unique_subject = no\n");

# cfssl: one pre-signed response per certificate it answers for
my $signed = `cfssl ocspsign -ca $dir/ca.crt -responder $dir/signer.crt -responder-key $dir/signer.key -cert $dir/muststaple.crt -status good 2>/dev/null`;
my $b64 = eval { JSON::PP::decode_json($signed)->{ocspResponse} };
ok($b64) or warn "# cfssl ocspsign failed: $signed\n";
t_write_file("$root/responses.txt", ($b64 // '') . "\n");

# double fork (Apache::Test's SIGCHLD handler), output to a log, pid back
sub spawn {
    my ($log, $env, @cmd) = @_;
    pipe my $r, my $w or die $!;
    my $pid = fork // die;
    if (!$pid) {
        POSIX::setsid();
        my $g = fork // POSIX::_exit(1);
        if ($g) { print $w "$g\n"; close $w; POSIX::_exit(0); }
        close $r;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $log;
        open STDERR, '>&', \*STDOUT;
        $ENV{$_} = $env->{$_} for keys %$env;
        { exec @cmd; }
        POSIX::_exit(127);
    }
    close $w;
    chomp(my $g = <$r> // '');
    waitpid $pid, 0;
    return $g;
}
my $ossl = spawn("$root/openssl.log", { LD_PRELOAD => "$root/bind_loopback.so" },
                 'openssl', 'ocsp', '-index', "$root/index.txt", '-CA', "$dir/ca.crt",
                 '-rsigner', "$dir/signer.crt", '-rkey', "$dir/signer.key",
                 '-port', $oport, '-nmin', '60');
my $cfssl = spawn("$root/cfssl.log", {}, 'cfssl', 'ocspserve', '-address', '127.0.0.1',
                  '-port', $cport, '-responses', "$root/responses.txt");
my $main_pid = $$;
END { kill 'TERM', grep { $_ } $ossl, $cfssl if $$ == $main_pid; }
RSTest::wait_for(sub { (eval { RSTest::slurp("$root/openssl.log") } // '') =~ /waiting for OCSP client/
                       && (eval { RSTest::slurp("$root/cfssl.log") } // '') =~ /Now listening/ },
                 20, 0.1) or die "responders did not start\n";
# on loopback only
my $ss = `ss -ltnH 2>/dev/null`;
my @mine = grep { /:($oport|$cport)\s/ } split /\n/, $ss;
print "# listening: $_\n" for @mine;
ok(@mine == 2 && !grep { !/\s(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]):\d+\s/ } @mine);

my %vh = (good => ['good', "http://127.0.0.1:$oport"],
          revoked => ['revoked', "http://127.0.0.1:$oport"],
          muststaple => ['muststaple', "http://127.0.0.1:$cport/ocsp"]);
my $conf = RSTest::server_conf_head($root, $sport)
         . "ResilientStapling on\nResilientStaplingStore $root/store\n";
for my $name (sort keys %vh) {
    my ($leaf, $url) = @{ $vh{$name} };
    $conf .= "<VirtualHost 127.0.0.1:$sport>\n ServerName $name.rs.test\n SSLEngine on\n"
           . " SSLCertificateFile $dir/$leaf.crt\n SSLCertificateKeyFile $dir/$leaf.key\n"
           . " SSLCertificateChainFile $dir/ca.crt\n ResilientStaplingForceURL $url\n"
           . "</VirtualHost>\n";
}
t_write_file("$root/httpd.conf", $conf);
RSTest::start_httpd($vars->{httpd}, $root);
sub hs { RSTest::handshake_on($sport, $_[0], "-CAfile $dir/ca.crt") }
sub log_text { eval { RSTest::slurp("$root/logs/error_log") } // '' }

my %h;
RSTest::wait_for(sub {
    for my $n (grep { !$h{$_} } sort keys %vh) {
        my $x = hs($n);
        $h{$n} = $x if $x->{stapled};
    }
    keys %h == 3;
}, 30, 0.25);
for my $n (sort keys %vh) {
    printf "# %s: %s, thisUpdate %s, lifetime %s s\n", $n, $h{$n} ? $h{$n}{status} : 'not stapled',
        $h{$n} ? scalar gmtime $h{$n}{this_update} : '-',
        $h{$n} ? $h{$n}{next_update} - $h{$n}{this_update} : '-';
}
# openssl ocsp: by GET (its root URL), nextUpdate from -nmin, signed by -rsigner
ok($h{good} && $h{good}{status} eq 'good' && $h{good}{next_update} - $h{good}{this_update} == 3600);
ok($h{revoked} && $h{revoked}{status} eq 'revoked');
my $log = log_text();
ok($log =~ /RS0201: OCSP response for CN=good\.rs\.test,.* by GET in/);
# cfssl ocspserve (this version): GET is answered 400, POST serves the pre-signed response
ok($h{muststaple} && $h{muststaple}{status} eq 'good'
   && $h{muststaple}{next_update} - $h{muststaple}{this_update} == 96 * 3600);
my ($get_err) = $log =~ /(RS0202: OCSP fetch for CN=muststaple\.rs\.test,.* by GET failed[^;]*)/;
print "# cfssl GET: " . ($get_err // 'no failure logged') . "\n";
ok($log =~ /RS0201: OCSP response for CN=muststaple\.rs\.test,.* by POST in/);
# curl checks the staple the way a client does
my $rc = system("curl -s -o /dev/null --max-time 10 --cert-status --cacert $dir/ca.crt "
                . "--resolve good.rs.test:$sport:127.0.0.1 https://good.rs.test:$sport/") >> 8;
ok($rc == 0);
# both responders are still there
ok(kill(0, $ossl) && kill(0, $cfssl));
RSTest::stop_httpd($vars->{httpd}, $root);
