# Bad configuration fails startup with a message that names the directive;
# good values are accepted.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestUtil qw(t_write_file);
use lib 't/lib';
use RSTest;

my @bad = (
    ['ResilientStapling maybe', qr/ResilientStapling/],
    ['ResilientStaplingForceURL ftp://x/', qr/ResilientStaplingForceURL: 'ftp:\/\/x\/' is not an http:\/\/ URL/],
    ['ResilientStaplingCache nosuch', qr/ResilientStaplingCache: unknown cache provider 'nosuch'/],
    ['ResilientStaplingRenewWindow 0%', qr/ResilientStaplingRenewWindow: '0%' is not a percentage/],
    ['ResilientStaplingRenewWindow 100%', qr/ResilientStaplingRenewWindow/],
    ['ResilientStaplingRenewWindow half', qr/ResilientStaplingRenewWindow/],
    ['ResilientStaplingResponderTimeout 0', qr/ResilientStaplingResponderTimeout: '0' is not a number of seconds/],
    ['ResilientStaplingResponderTimeout 10s', qr/ResilientStaplingResponderTimeout/],
    ['ResilientStaplingRetry 60 10', qr/ResilientStaplingRetry: the maximum \(10\) is below the minimum \(60\)/],
    ['ResilientStaplingRetry x 10', qr/ResilientStaplingRetry: 'x' is not a number of seconds/],
    ['ResilientStaplingRetry 60', qr/ResilientStaplingRetry takes two arguments/],
    ['ResilientStaplingClockSkew -1', qr/ResilientStaplingClockSkew/],
    ['ResilientStaplingProxy 127.0.0.1:3128', qr/ResilientStaplingProxy: '127\.0\.0\.1:3128' is not an http:\/\/ URL/],
    ['ResilientStaplingMaxFetches 0', qr/ResilientStaplingMaxFetches: '0' is not a number between 1 and 256/],
    ['ResilientStaplingMethod put', qr/ResilientStaplingMethod: 'put' is not auto, get or post/],
    ['ResilientStaplingStartupWait 61', qr/ResilientStaplingStartupWait: '61' is not a number of seconds between 0 and 60/],
    ["<VirtualHost 127.0.0.1:1>\nResilientStaplingRetry 1 2\n</VirtualHost>",
     qr/ResilientStaplingRetry cannot occur within <VirtualHost> section/],
);
my @good = (
    "ResilientStapling on\nResilientStaplingRenewWindow 30%\nResilientStaplingResponderTimeout 1\n"
    . "ResilientStaplingRetry 1 1\nResilientStaplingClockSkew 0\nResilientStaplingMaxFetches 256\n"
    . "ResilientStaplingProxy http://127.0.0.1:3128\nResilientStaplingCache shmcb\n"
    . "ResilientStaplingForceURL http://127.0.0.1:1/x\n"
    . "ResilientStaplingMethod POST\nResilientStaplingStartupWait 0\n",
);
plan tests => 2 * @bad + @good;

my $vars = Apache::Test::vars();
my $loads = RSTest::slurp("$vars->{t_dir}/inherit.conf");
my $conf = "$vars->{t_logs}/config_test.conf";

sub syntax {
    my $body = shift;
    t_write_file($conf, "ServerRoot $vars->{t_dir}\n$loads\n$body\n");
    my $out = `$vars->{httpd} -t -f $conf 2>&1`;
    return ($? >> 8, $out);
}

for my $case (@bad) {
    my ($rc, $out) = syntax($case->[0]);
    ok($rc != 0);
    ok($out =~ $case->[1]) or warn "# '$case->[0]' said: $out\n";
}
for my $body (@good) {
    my ($rc, $out) = syntax($body);
    ok($rc == 0) or warn "# said: $out\n";
}
