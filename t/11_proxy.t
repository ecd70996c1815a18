# ResilientStaplingProxy: fetches go through an HTTP proxy (t/http_proxy.py)
# with the responder's absolute URL, and are stapled as usual.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;

plan tests => 3;

my $conf = Apache::Test::vars()->{t_conf} . '/rs_vhosts.conf.inc';
my $text = RSTest::slurp($conf);
open my $fh, '>', $conf or die $!;
print $fh "ResilientStaplingProxy http://127.0.0.1:" . RSTest::proxy_port() . "\n$text";
close $fh;
RSTest::graceful();

# "count" renews every ~3 s: its next fetch goes through the proxy
my $port = RSTest::responder_port();
ok(RSTest::wait_for(sub { grep { $_ eq "http://127.0.0.1:$port/count" } @{ RSTest::proxied() } }, 8));
my $before = RSTest::handshake('count');
ok(RSTest::wait_for(sub {
    my $h = RSTest::handshake('count');
    $h->{stapled} && $h->{this_update} > ($before->{this_update} // 0) }, 8));

open $fh, '>', $conf or die $!;
print $fh $text;
close $fh;
RSTest::graceful();
my $n = @{ RSTest::proxied() };
sleep 5;
ok(@{ RSTest::proxied() } == $n);  # direct again
