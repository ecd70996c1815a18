# The prefork MPM, as every Debian host with mod_php runs it: a separate
# httpd with 24 prefork children and 1,000 SNI vhosts (one certificate whose
# responder answers "unauthorized", so the refresher keeps working), 60 s of
# back-to-back handshakes sweeping the vhosts. No child may die of a signal
# (prefork's pchild allocator has no mutex: a module thread allocating from
# it corrupts the connection's pools), every good certificate is stapled,
# and a stop ends all 24 children within a few seconds.
# RS_PREFORK_LOAD=SECONDS changes the load time (0 skips), RS_PREFORK_VHOSTS
# the number of vhosts, RS_PREFORK_CHILDREN
# the number of children.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestUtil qw(t_write_file);
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

my $SECS = $ENV{RS_PREFORK_LOAD} // 60;
my ($N, $CHILDREN) = ($ENV{RS_PREFORK_VHOSTS} || 1000, $ENV{RS_PREFORK_CHILDREN} || 24);
plan tests => 6, sub { $SECS > 0 };

my $vars = Apache::Test::vars();
my $dir = "$vars->{t_dir}/pki/prefork-$N";
my $root = "$vars->{t_logs}/prefork";
my ($rport, $sport) = map { RSTest::port($_) } 18690, 18691;
RSTest::fresh_root($vars->{httpd}, $root);
RSTest::own_responder($dir, $rport, $N);
RSTest::http_get($rport, '/_ctl/set?name=s0000&mode=unauthorized');

my $hsload = "$root/hsload";
system("cc -std=gnu11 -O2 -o $hsload $vars->{top_dir}/bench/hsload.c -lssl -lcrypto -lpthread") == 0
    or die "cannot build bench/hsload.c\n";

# prefork whatever MPM the suite runs under (RS_MPM)
(my $head = RSTest::server_conf_head($root, $sport)) =~ s/mpm_\w+_module\s+(\S+)mod_mpm_\w+\.so/mpm_prefork_module $1mod_mpm_prefork.so/
    or die "no MPM line to replace\n";
$head =~ s/^(StartServers|ServerLimit|MaxRequestWorkers) .*\n//mg;
my $conf = $head . <<"EOC";
StartServers $CHILDREN
MinSpareServers $CHILDREN
MaxSpareServers @{[ $CHILDREN + 8 ]}
ServerLimit @{[ $CHILDREN + 8 ]}
MaxRequestWorkers @{[ $CHILDREN + 8 ]}
MaxConnectionsPerChild 0
ResilientStapling on
ResilientStaplingStore $root/store
ResilientStaplingRetry 1 2
EOC
$conf .= RSTest::vhosts($sport, $dir, RSTest::leaf_names($N));
t_write_file("$root/httpd.conf", $conf);

my $log = "$root/logs/error_log";
sub children {
    my $pid = eval { RSTest::slurp("$root/logs/httpd.pid") } // return ();
    chomp $pid;
    return map { /^\s*(\d+)\s+$pid\s*$/ ? $1 : () } `ps -e -o pid=,ppid=`;
}

RSTest::start_httpd($vars->{httpd}, $root);
ok(RSTest::wait_for(sub { (() = RSTest::slurp($log) =~ /RS0201: /g) >= $N - 1 }, 90, 0.25))
    or warn "# not every certificate was fetched within 90 s\n";
ok(RSTest::wait_for(sub { children() >= $CHILDREN }, 30, 0.25));

my $out = `$hsload 127.0.0.1 $sport s%04d.rs.test 8 $SECS "" $N`;
print "# prefork, $N vhosts, $CHILDREN children, $SECS s: $out";
my ($hs) = $out =~ /handshakes=(\d+)/;
my ($stapled) = $out =~ /stapled=([\d.]+)/;
# s0000 has nothing to staple: 1 of 300 names
ok(($stapled // 0) >= 0.99) or warn "# stapled fraction " . ($stapled // 'none') . "\n";

my @crashes = RSTest::slurp($log) =~ /(AH00052: child pid \d+ exit signal [^\n]*)/g;
warn "# $_\n" for @crashes;
ok(!@crashes && ($hs // 0) > 0)
    or warn "# " . scalar(@crashes) . " crashes in " . ($hs // 0) . " handshakes\n";

my @kids = children();
my $t0 = time;
system($vars->{httpd}, '-f', "$root/httpd.conf", '-k', 'stop');
my $gone = RSTest::wait_for(sub { !grep { kill 0, $_ } @kids }, 30, 0.05);
my $took = time - $t0;
printf "# stop: %d children gone in %.2f s\n", scalar @kids, $took;
ok($gone && $took < 5) or warn sprintf "# children still alive %.1f s after stop\n", $took;
RSTest::wait_for(sub { !-f "$root/logs/httpd.pid" }, 30, 0.1);
my @late = RSTest::slurp($log) =~ /(AH00052: child pid \d+ exit signal [^\n]*)/g;
ok(@late == @crashes) or warn map { "# at stop: $_\n" } @late[scalar @crashes .. $#late];
